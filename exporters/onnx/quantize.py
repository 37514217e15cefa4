"""Int8 ONNX models with ONNX Runtime's quantizer: dynamic (weights only) and static (QDQ, calibrated).

Both write atomically and return sizes, so a caller can report the compression next to the
accuracy that :func:`exporters.onnx.validate_onnx` measures on the int8 file.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from exporters.onnx.atomic_files import atomic_output_path

logger = logging.getLogger(__name__)

# Op types that carry int8 data after quantization: counting them shows what was quantized.
QUANTIZED_OP_TYPES = frozenset(
    {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QGemm"}
)


@dataclass
class QuantizationResult:
    """What a quantization wrote: paths, sizes and the int8 op types in the new graph."""

    mode: Literal["dynamic", "static"]
    fp32_path: str
    int8_path: str
    fp32_bytes: int
    int8_bytes: int
    quantized_op_counts: dict[str, int]
    elapsed_s: float

    @property
    def size_ratio(self) -> float:
        """int8 size / fp32 size (about 0.25-0.4 for a transformer; embeddings often stay fp32)."""
        return self.int8_bytes / self.fp32_bytes if self.fp32_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "size_ratio": self.size_ratio}


class BatchCalibrationReader:
    """An ONNX Runtime ``CalibrationDataReader`` over a fixed list of input batches.

    It is made a real subclass lazily (see :func:`_calibration_reader`) so that importing this
    module does not import onnxruntime.
    """

    def __init__(self, batches: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._batches = [{name: np.asarray(value) for name, value in batch.items()} for batch in batches]
        self._iterator: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._batches)


def quantize_dynamic_int8(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    *,
    per_channel: bool = False,
) -> QuantizationResult:
    """Quantize weights to int8 ahead of time; activations are quantized on the fly at run time.

    No calibration data is needed, which makes this the safe default for transformer encoders.

    Example:
        >>> import tempfile, pathlib
        >>> from transformers import BertConfig, BertModel
        >>> from exporters.onnx import export_onnx, export_config_for_model, quantize_dynamic_int8
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                              intermediate_size=37, vocab_size=100))
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = export_onnx(model, None, folder / "model.onnx", config=export_config_for_model(model), dynamo=False)
        >>> result = quantize_dynamic_int8(folder / "model.onnx", folder / "model_quantized.onnx")
        >>> result.quantized_op_counts["MatMulInteger"] > 0
        True
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    with atomic_output_path(int8_path) as tmp:
        quantize_dynamic(Path(fp32_path), tmp, weight_type=QuantType.QInt8, per_channel=per_channel)
    return _result("dynamic", fp32_path, int8_path, started)


# The ops static int8 quantizes: where transformer encoders spend their time, and whose inputs have
# finite ranges.
STATIC_OP_TYPES = ("MatMul", "Gemm")


def quantize_static_int8(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    calibration_inputs: Sequence[Mapping[str, np.ndarray]],
    *,
    per_channel: bool = False,
) -> QuantizationResult:
    """Quantize weights and activations to int8 in QDQ format, with ranges calibrated (MinMax) on the given batches.

    Args:
        calibration_inputs: input batches, each a dict of arrays keyed by the graph's input names
            (e.g. from :meth:`OnnxConfig.generate_dummy_inputs` or tokenised real text; real text
            gives far better ranges).

    Activations are uint8 and weights int8 (U8S8), the combination ONNX Runtime's CPU kernels
    run fastest. Only the matmuls (:data:`STATIC_OP_TYPES`) are quantized: an additive attention mask
    holds the float minimum, so quantizing the Add / Where that apply it calibrates an infinite scale
    and every row's output becomes the same.

    Example:
        >>> import tempfile, pathlib
        >>> from transformers import BertConfig, BertModel
        >>> from exporters.onnx import export_onnx, export_config_for_model, quantize_static_int8
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                              intermediate_size=37, vocab_size=100))
        >>> config = export_config_for_model(model)
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = export_onnx(model, None, folder / "model.onnx", config=config, dynamo=False)
        >>> batches = [config.generate_dummy_inputs(2, 8, seed=i) for i in range(4)]
        >>> result = quantize_static_int8(folder / "model.onnx", folder / "model.qdq.onnx", batches)
        >>> result.quantized_op_counts["QuantizeLinear"] > 0
        True
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration_inputs:
        raise ValueError("quantize_static_int8 needs at least one calibration batch")
    started = time.perf_counter()
    with atomic_output_path(int8_path) as tmp:
        quantize_static(
            Path(fp32_path),
            tmp,
            _calibration_reader(calibration_inputs),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(STATIC_OP_TYPES),
        )
    return _result("static", fp32_path, int8_path, started)


def _calibration_reader(batches: Sequence[Mapping[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    # quantize_static checks isinstance(reader, CalibrationDataReader), so mix the base class in.
    reader_class = type("OrtBatchCalibrationReader", (BatchCalibrationReader, CalibrationDataReader), {})
    return reader_class(batches)


def count_op_types(path: str | os.PathLike[str]) -> Counter[str]:
    """How many nodes of each op type the graph at ``path`` has (top-level graph and functions)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts = Counter(node.op_type for node in model.graph.node)
    for function in model.functions:
        counts.update(node.op_type for node in function.node)
    return counts


def _result(mode: Literal["dynamic", "static"], fp32_path: Any, int8_path: Any, started: float) -> QuantizationResult:
    counts = count_op_types(int8_path)
    result = QuantizationResult(
        mode=mode,
        fp32_path=str(fp32_path),
        int8_path=str(int8_path),
        fp32_bytes=Path(fp32_path).stat().st_size,
        int8_bytes=Path(int8_path).stat().st_size,
        quantized_op_counts={op: n for op, n in sorted(counts.items()) if op in QUANTIZED_OP_TYPES},
        elapsed_s=time.perf_counter() - started,
    )
    logger.info("%s int8 quantization wrote %s (%.2fx of fp32)", mode, int8_path, result.size_ratio)
    return result
