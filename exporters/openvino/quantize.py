"""Int8 OpenVINO models with NNCF's post-training quantization, calibrated on real inputs.

``nncf.quantize`` with ``model_type=TRANSFORMER`` keeps the ops that lose most in int8 (softmax
inputs, layer norms, the attention's scaled dot product) in float, smooths activation outliers
into the weights (SmoothQuant) and corrects the biases; on the dense all-MiniLM-L6-v2 that kept a
Spearman correlation of 0.997 with the float model's pairwise similarities (400 movie-review
snippets, benchmarks/end_to_end.py), where ONNX Runtime's dynamic int8 kept 0.956.

Calibration wants a few hundred real texts, one per item (no padding in the statistics), in a
shuffled order: the first texts of a split are often alike (sorted by source or length).

Example:
    >>> import tempfile, pathlib
    >>> from transformers import BertConfig, BertModel
    >>> from exporters.onnx import export_onnx, export_config_for_model
    >>> from exporters.openvino import convert_onnx_to_openvino, quantize_openvino_int8
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                              intermediate_size=37, vocab_size=100))
    >>> config = export_config_for_model(model)
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = export_onnx(model, None, folder / "model.onnx", config=config, dynamo=False)
    >>> fp32 = convert_onnx_to_openvino(folder / "model.onnx", folder / "openvino_model.xml")
    >>> samples = [config.generate_dummy_inputs(1, 8, seed=i) for i in range(4)]
    >>> result = quantize_openvino_int8(fp32.xml_path, folder / "openvino_model_qint8_quantized.xml", samples,
    ...                                 show_progress=False)
    >>> result.samples, result.int8_bytes < result.fp32_bytes
    (4, True)
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.errors import OpenVINOQuantizationFailed
from exporters.openvino.convert import save_ir
from exporters.openvino.runtime import error_text, require_openvino

logger = logging.getLogger(__name__)

# NNCF's own default subset; more texts calibrate little better and cost linear time (16 s for 300 on
# the compressed MiniLM, 2 cores).
DEFAULT_CALIBRATION_SAMPLES = 300


@dataclass
class OpenVINOQuantizationResult:
    """What :func:`quantize_openvino_int8` wrote, from what, and on how many samples."""

    fp32_path: str
    int8_path: str
    fp32_bytes: int
    int8_bytes: int
    samples: int
    model_type: str
    nncf_version: str
    elapsed_s: float

    @property
    def size_ratio(self) -> float:
        """int8 weights / fp32 weights (the ``.bin`` files)."""
        return self.int8_bytes / self.fp32_bytes if self.fp32_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size_ratio": self.size_ratio}


def quantize_openvino_int8(
    fp32_xml: str | os.PathLike[str],
    int8_xml: str | os.PathLike[str],
    calibration_inputs: Sequence[Mapping[str, np.ndarray]],
    *,
    max_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    show_progress: bool = True,
) -> OpenVINOQuantizationResult:
    """Quantize the IR at ``fp32_xml`` to int8 with NNCF and write it to ``int8_xml`` (+ ``.bin``).

    Args:
        calibration_inputs: model inputs, each a dict of arrays by input name (keys the model does
            not take are dropped), ideally one tokenised real text each, already shuffled.
        max_samples: how many of them NNCF uses at most.
        show_progress: NNCF's progress bars (they write to stdout).

    Raises:
        ValueError: no calibration input.
        OpenVINONotInstalled: openvino or nncf is missing.
        OpenVINOQuantizationFailed: NNCF failed; ``int8_xml`` is left as it was.
    """
    require_openvino(int8=True)
    import nncf
    import openvino as ov

    if not calibration_inputs:
        raise ValueError("quantize_openvino_int8 needs at least one calibration input")
    started = time.perf_counter()
    model = ov.Core().read_model(os.fspath(fp32_xml))
    names = {name for port in model.inputs for name in port.get_names()}
    items = [{k: np.asarray(v) for k, v in batch.items() if k in names} for batch in calibration_inputs[:max_samples]]
    quiet = contextlib.nullcontext() if show_progress else contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet:
            quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(items))
    except Exception as err:  # NNCF raises its own errors and whatever OpenVINO raises under it
        raise OpenVINOQuantizationFailed(os.fspath(fp32_xml), error_text(err)) from err
    save_ir(quantized, int8_xml)
    result = OpenVINOQuantizationResult(
        fp32_path=os.fspath(fp32_xml),
        int8_path=os.fspath(int8_xml),
        fp32_bytes=Path(fp32_xml).with_suffix(".bin").stat().st_size,
        int8_bytes=Path(int8_xml).with_suffix(".bin").stat().st_size,
        samples=len(items),
        model_type="transformer",
        nncf_version=nncf.__version__,
        elapsed_s=time.perf_counter() - started,
    )
    logger.info("NNCF int8 quantization wrote %s (%.2fx of fp32, %d samples)", int8_xml, result.size_ratio,
                result.samples)
    return result
