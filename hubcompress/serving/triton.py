"""Write a Triton Inference Server model repository for an output folder's ONNX model.

The layout is ``<repository>/<name>/1/model.onnx`` (Triton's file name, whichever of the folder's
``onnx/model.onnx`` or, with ``int8``, ``onnx/model_quantized.onnx`` it is) plus
``<repository>/<name>/config.pbtxt``, for Triton's ONNX Runtime backend. Inputs, outputs, data types
and dims come from the ONNX graph itself, so the config cannot drift from the file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hubcompress.errors import ServingError
from hubcompress.serving.graph import GraphSignature, TensorSpec, read_graph_signature
from hubcompress.serving.model_folder import open_model_folder
from hubcompress.serving.tasks import SERVED_TASKS

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.txt"
TRITON_MODEL_FILE = "model.onnx"  # the onnxruntime backend's default_model_filename


@dataclass(frozen=True)
class TritonExport:
    """What :func:`export_triton_repository` wrote."""

    model_dir: Path
    config_path: Path
    onnx_path: Path
    max_batch_size: int


def export_triton_repository(
    source: str | Path,
    repository: str | Path,
    *,
    int8: bool = False,
    model_name: str | None = None,
    max_batch_size: int = 32,
    max_queue_delay_us: int = 2000,
    instance_count: int = 1,
) -> TritonExport:
    """Write ``<repository>/<name>/`` for Triton: the ONNX file as version 1, and its ``config.pbtxt``.

    ``int8`` takes the folder's :data:`exporters.onnx.ONNX_INT8` instead of :data:`exporters.onnx.ONNX_FP32`.

    With ``max_batch_size > 0`` (Triton's batching on), every input and output must have a dynamic
    first axis; the dims in the config then leave that axis out, as Triton expects. A model without
    one gets ``max_batch_size: 0`` and full dims. An existing model directory of that name is
    replaced as a whole, never half-written (built next to it, then renamed into place).

    Example:
        >>> import pathlib, tempfile, onnx
        >>> from onnx import TensorProto, helper
        >>> from exporters.onnx import ONNX_FP32
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "echo"
        >>> (folder / "onnx").mkdir(parents=True)
        >>> ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
        >>> out = helper.make_tensor_value_info("copy", TensorProto.INT64, ["batch", "sequence"])
        >>> graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["copy"])], "g", [ids], [out])
        >>> onnx.save(helper.make_model(graph), folder / ONNX_FP32)
        >>> result = export_triton_repository(folder, folder.parent / "model_repository")
        >>> print(result.config_path.read_text())  # doctest: +ELLIPSIS
        name: "echo"
        platform: "onnxruntime_onnx"
        max_batch_size: 32
        input [
          {
            name: "input_ids"
            data_type: TYPE_INT64
            dims: [ -1 ]
          }
        ]
        ...
    """
    if max_batch_size < 0 or instance_count < 1 or max_queue_delay_us < 0:
        raise ServingError("max_batch_size and max_queue_delay_us must be 0 or more, instance_count at least 1")
    # Triton's ONNX Runtime backend runs the ONNX file, whatever a server would pick.
    folder = open_model_folder(source, int8=int8, backend="onnxruntime", name=model_name, need_task=False)
    signature = read_graph_signature(folder.onnx_path)
    if max_batch_size > 0 and not _batch_axis_is_dynamic(signature):
        logger.warning("%s has a tensor without a dynamic first axis: writing max_batch_size 0", folder.onnx_path)
        max_batch_size = 0
    labels = folder.id2label if folder.task in SERVED_TASKS and SERVED_TASKS[folder.task].labelled else {}
    config = render_config(folder.name, signature, max_batch_size=max_batch_size,
                           max_queue_delay_us=max_queue_delay_us, instance_count=instance_count,
                           label_output=SERVED_TASKS[folder.task].source if labels else None)

    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    final_dir = repository / folder.name
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=repository))
    try:
        (staging / "1").mkdir()
        shutil.copyfile(folder.onnx_path, staging / "1" / TRITON_MODEL_FILE)
        (staging / "config.pbtxt").write_text(config, encoding="utf-8")
        if labels:
            (staging / LABELS_FILE).write_text("".join(f"{labels[i]}\n" for i in sorted(labels)), encoding="utf-8")
        _replace_dir(staging, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote the Triton model %s (max_batch_size %d)", final_dir, max_batch_size)
    return TritonExport(final_dir, final_dir / "config.pbtxt", final_dir / "1" / TRITON_MODEL_FILE, max_batch_size)


def render_config(
    name: str,
    signature: GraphSignature,
    *,
    max_batch_size: int,
    max_queue_delay_us: int = 2000,
    instance_count: int = 1,
    label_output: str | None = None,
) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``ModelConfig``).

    Example:
        >>> from hubcompress.serving.graph import GraphSignature, TensorSpec
        >>> spec = TensorSpec("logits", "FP32", (-1, 3), ("batch", None))
        >>> print(render_config("m", GraphSignature((), (spec,)), max_batch_size=0).splitlines()[3:9])
        ['output [', '  {', '    name: "logits"', '    data_type: TYPE_FP32', '    dims: [ -1, 3 ]', '  }']
    """
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size}"]
    for section, specs in (("input", signature.inputs), ("output", signature.outputs)):
        if not specs:
            continue
        blocks = []
        for spec in specs:
            dims = spec.dims[1:] if max_batch_size > 0 else spec.dims
            block = [f'    name: "{spec.name}"', f"    data_type: {triton_data_type(spec)}",
                     f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
            if spec.name == label_output:
                block.append(f'    label_filename: "{LABELS_FILE}"')
            blocks.append("  {\n" + "\n".join(block) + "\n  }")
        lines.append(f"{section} [\n" + ",\n".join(blocks) + "\n]")
    if max_batch_size > 0:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {instance_count}\n    kind: KIND_CPU\n  }}\n]")
    return "\n".join(lines) + "\n"


def triton_data_type(spec: TensorSpec) -> str:
    """Triton's ``TYPE_*`` name for a tensor (BYTES is ``TYPE_STRING`` there).

    Example:
        >>> from hubcompress.serving.graph import TensorSpec
        >>> triton_data_type(TensorSpec("input_ids", "INT64", (-1, -1), ("batch", "sequence")))
        'TYPE_INT64'
    """
    return "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"


def _batch_axis_is_dynamic(signature: GraphSignature) -> bool:
    return all(spec.dims and spec.dims[0] == -1 for spec in (*signature.inputs, *signature.outputs))


def _replace_dir(new: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        try:
            new.rename(final)
        except OSError:
            old.rename(final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(final)
