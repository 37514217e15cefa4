"""ONNX file in, OpenVINO IR (``.xml`` + ``.bin``, fp32 weights) out, written atomically as a pair.

Why from the exported ONNX file and not from the PyTorch model (``openvino.convert_model`` takes
both): the IR is then the graph that was already exported and checked, with its input and output
names and dynamic axes, and on the compressed all-MiniLM-L6-v2 it matched ONNX Runtime to 2e-6.
Converting the PyTorch model traces it a second time (another exporter with its own failures on
new transformers releases), names the inputs after the trace (``attention_mask.1``, ``input.1``)
and was no closer to PyTorch: 1.3e-4 max abs diff both ways on a padded batch, 1.1e-5 against
1.2e-5 on the real tokens.

Example:
    >>> import tempfile, pathlib
    >>> from transformers import BertConfig, BertModel
    >>> from exporters.onnx import export_onnx, export_config_for_model
    >>> from exporters.openvino import convert_onnx_to_openvino
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                              intermediate_size=37, vocab_size=100))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = export_onnx(model, None, folder / "model.onnx", config=export_config_for_model(model), dynamo=False)
    >>> result = convert_onnx_to_openvino(folder / "model.onnx", folder / "openvino/openvino_model.xml")
    >>> result.input_names, result.output_names
    (['input_ids', 'attention_mask', 'token_type_ids'], ['last_hidden_state', 'pooler_output'])
    >>> sorted(p.name for p in (folder / "openvino").iterdir())
    ['openvino_model.bin', 'openvino_model.xml']
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exporters.errors import OpenVINOConvertFailed
from exporters.openvino.runtime import error_text, require_openvino

logger = logging.getLogger(__name__)


@dataclass
class OpenVINOExportResult:
    """What :func:`convert_onnx_to_openvino` wrote."""

    source_path: str
    xml_path: str
    bin_path: str
    input_names: list[str]
    output_names: list[str]
    bin_bytes: int
    openvino_version: str
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convert_onnx_to_openvino(onnx_path: str | os.PathLike[str], xml_path: str | os.PathLike[str]) -> OpenVINOExportResult:
    """Convert the ONNX file at ``onnx_path`` to OpenVINO IR at ``xml_path`` (and the ``.bin`` beside it).

    Weights stay fp32 (``openvino.save_model`` would halve them to fp16 by default, and the file
    would no longer compute what the ONNX file computes).

    Raises:
        OpenVINONotInstalled: openvino is missing.
        OpenVINOConvertFailed: the converter rejects the file; ``xml_path`` is left as it was.
    """
    require_openvino()
    import openvino as ov

    started = time.perf_counter()
    try:
        # The ONNX frontend by name: `ov.convert_model` on a file it cannot parse tries every frontend,
        # and the TensorFlow one then sets the root logger to ERROR with a handler of its own, which
        # silences every later warning of the process.
        frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
        model = frontend.convert(frontend.load(os.fspath(onnx_path)))
    except Exception as err:  # the converter raises RuntimeError / OpConversionFailure and more
        raise OpenVINOConvertFailed(os.fspath(onnx_path), error_text(err)) from err
    save_ir(model, xml_path)
    return _result(model, onnx_path, xml_path, started)


def save_ir(model: Any, xml_path: str | os.PathLike[str]) -> None:
    """Save an ``openvino.Model`` as ``xml_path`` + its ``.bin``, fp32, so that a reader sees the old
    pair or the new one, never a mix.

    Both files are written into a temporary folder next to ``xml_path`` and moved into place weights
    first: the ``.xml`` is what a reader opens, so once it is the new one its ``.bin`` is too.
    """
    import openvino as ov

    final = Path(xml_path)
    with _staging_folder(final.parent, final.stem) as staging:
        ov.save_model(model, str(staging / final.name), compress_to_fp16=False)
        for name in (final.with_suffix(".bin").name, final.name):
            _readable(staging / name)
            os.replace(staging / name, final.parent / name)
    logger.debug("wrote %s and %s", final, final.with_suffix(".bin"))


@contextlib.contextmanager
def _staging_folder(parent: Path, stem: str) -> Iterator[Path]:
    # Named like every other temporary of a run (".<name>.<random>.tmp"), so a killed run's leftover
    # is recognised, removed on resume and never pushed.
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{stem}.", suffix=".tmp"))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _readable(path: Path) -> None:
    # Published files get the mode a plain open() would give (the staging folder is private).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _result(model: Any, source: Any, xml_path: Any, started: float) -> OpenVINOExportResult:
    import openvino as ov

    xml = Path(xml_path)
    result = OpenVINOExportResult(
        source_path=os.fspath(source),
        xml_path=str(xml),
        bin_path=str(xml.with_suffix(".bin")),
        input_names=[port.get_any_name() for port in model.inputs],
        output_names=[port.get_any_name() for port in model.outputs],
        bin_bytes=xml.with_suffix(".bin").stat().st_size,
        openvino_version=ov.get_version(),
        elapsed_s=time.perf_counter() - started,
    )
    logger.info("converted %s to %s in %.1f s", source, xml, result.elapsed_s)
    return result
