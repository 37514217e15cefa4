"""Where a model folder keeps its ONNX files: the names the people who download it look for.

transformers.js picks a file by ``dtype``: ``"fp32"`` reads ``onnx/model.onnx``, ``"q8"``
``onnx/model_quantized.onnx``, ``"int8"`` ``onnx/model_int8.onnx`` and ``"uint8"``
``onnx/model_uint8.onnx`` (Optimum's quantizer also names its output ``model_quantized.onnx``).
So the int8 model is written as ``model_quantized.onnx`` and copied under the one of
``model_int8`` / ``model_uint8`` that tells the truth about its weights (:func:`int8_weight_type`).

Example:
    >>> import pathlib, tempfile
    >>> from exporters.onnx import ONNX_FP32, ONNX_INT8, onnx_files
    >>> ONNX_FP32, ONNX_INT8
    ('onnx/model.onnx', 'onnx/model_quantized.onnx')
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "onnx").mkdir()
    >>> _ = (folder / ONNX_FP32).write_bytes(b"")
    >>> onnx_files(folder)
    ['onnx/model.onnx']
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from exporters.onnx.atomic_files import atomic_output_path

logger = logging.getLogger(__name__)

ONNX_FP32 = "onnx/model.onnx"
ONNX_INT8 = "onnx/model_quantized.onnx"
ONNX_OPTIMIZED = "onnx/model.optimized.onnx"  # ONNX Runtime's fused fp32 graph (export.optimize)
# The copy of ONNX_INT8 that names its weight type, by that type.
ONNX_INT8_ALIASES: dict[str, str] = {"int8": "onnx/model_int8.onnx", "uint8": "onnx/model_uint8.onnx"}
# Every ONNX file a model folder may hold, relative to it (also usable as hub allow_patterns).
ONNX_FILE_PATTERNS: tuple[str, ...] = (ONNX_FP32, ONNX_INT8, *ONNX_INT8_ALIASES.values(), ONNX_OPTIMIZED)

WeightType = Literal["int8", "uint8"]

# ONNX TensorProto element types (onnx.TensorProto.INT8 / UINT8), spelled out so that the names
# above import without onnx.
_ELEMENT_TYPES: dict[int, WeightType] = {3: "int8", 2: "uint8"}
# Integer kernels and the positions of their (quantized data, zero point) operand pairs: the
# constant operand of a pair is a weight.
_INTEGER_KERNELS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "MatMulInteger": ((0, 2), (1, 3)),
    "ConvInteger": ((0, 2), (1, 3)),
    "QLinearMatMul": ((0, 2), (3, 5)),
    "QLinearConv": ((0, 2), (3, 5)),
    "QGemm": ((0, 2), (3, 5)),
    "MatMulIntegerToFloat": ((0, 4), (1, 5)),
    "DynamicQuantizeMatMul": ((1, 3),),
}
# A dequantized constant is a weight when it reaches one of these (through layout-only ops); one
# that reaches a Gather is an embedding table, which ONNX Runtime quantizes with the activation
# type (uint8) whatever the weight type, so it says nothing about the weights.
_WEIGHT_CONSUMERS: dict[str, frozenset[int]] = {  # op type -> its input positions that take a weight (not a bias)
    "MatMul": frozenset({0, 1}), "Gemm": frozenset({0, 1}), "FusedMatMul": frozenset({0, 1}),
    "Conv": frozenset({1}), "ConvTranspose": frozenset({1}),
}
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"})


def onnx_files(folder: str | os.PathLike[str]) -> list[str]:
    """The paths of :data:`ONNX_FILE_PATTERNS` that exist in ``folder``, relative to it, in that order.

    Example:
        >>> import pathlib, tempfile
        >>> onnx_files(pathlib.Path(tempfile.mkdtemp()))
        []
    """
    root = Path(folder)
    return [name for name in ONNX_FILE_PATTERNS if (root / name).is_file()]


def int8_weight_type(path: str | os.PathLike[str]) -> WeightType | None:
    """``"int8"`` or ``"uint8"``: the element type of the quantized weights of the ONNX file at ``path``.

    The weights are the constant operands of the matrix products of the top-level graph (ONNX
    Runtime's quantizers and the TorchScript exporter write no functions): the constant input of an
    integer kernel (``MatMulInteger``, ``QLinearMatMul``, ``MatMulIntegerToFloat``, ``ConvInteger``,
    ..., as ONNX Runtime's ``quantize_dynamic`` writes them), and a constant that a ``DequantizeLinear``
    hands (maybe through a Transpose or Reshape) to a MatMul, Gemm or Conv (QDQ files from
    ``quantize_static`` keep the weight as an int8 initializer; :func:`exporters.onnx.export_qdq_onnx`
    writes float weights that a ``QuantizeLinear`` of a constant quantizes). Activations
    (``DynamicQuantizeLinear``, and Q/DQ of computed tensors) are uint8 for ONNX Runtime's CPU
    kernels either way, and embedding tables behind a Gather take the activation type, so
    neither counts.

    Returns ``None`` when the file has no quantized weights, when they mix int8 and uint8, or when
    they are of another type (int4, float8): no single name would be true then.

    Example:
        >>> import pathlib, tempfile
        >>> import numpy as np, onnx
        >>> from onnx import TensorProto, helper, numpy_helper
        >>> weight = numpy_helper.from_array(np.ones((4, 2), np.int8), "w")
        >>> zero = numpy_helper.from_array(np.array(0, np.int8), "w_zero")
        >>> scale = numpy_helper.from_array(np.array(0.1, np.float32), "w_scale")
        >>> nodes = [helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_float"]),
        ...          helper.make_node("MatMul", ["x", "w_float"], ["y"])]
        >>> graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        ...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        ...                           initializer=[weight, zero, scale])
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model_quantized.onnx"
        >>> onnx.save(helper.make_model(graph), path)
        >>> int8_weight_type(path)
        'int8'
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    found = {_ELEMENT_TYPES.get(t, "other") for t in _weight_element_types(graph.node, graph.initializer)}
    if len(found) == 1 and "other" not in found:
        return found.pop()  # type: ignore[return-value]
    if found:
        logger.info("%s: quantized weights of types %s; no int8/uint8 alias", path, sorted(found))
    return None


def write_int8_aliases(folder: str | os.PathLike[str]) -> list[str]:
    """Copy ``folder``'s :data:`ONNX_INT8` to ``onnx/model_int8.onnx`` or ``onnx/model_uint8.onnx``,
    as :func:`int8_weight_type` says; return the paths written, relative to ``folder``.

    Each copy is written atomically. An alias that no longer matches (left by an earlier int8 file
    of the other kind, or of no single kind) is removed, so a folder never offers a file under a
    name that lies about it.

    Raises:
        FileNotFoundError: ``folder`` has no :data:`ONNX_INT8`.

    Example:
        >>> import pathlib, tempfile
        >>> from onnx import TensorProto, helper, save
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> (folder / "onnx").mkdir()
        >>> graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
        ...                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        ...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        >>> save(helper.make_model(graph), folder / ONNX_INT8)
        >>> _ = (folder / "onnx" / "model_uint8.onnx").write_bytes(b"stale")
        >>> write_int8_aliases(folder)  # nothing quantized: no alias, and the stale one goes
        []
        >>> sorted(p.name for p in (folder / "onnx").iterdir())
        ['model_quantized.onnx']
    """
    root = Path(folder)
    source = root / ONNX_INT8
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist: write the int8 model there before its aliases")
    kind = int8_weight_type(source)
    written: list[str] = []
    for alias_kind, alias in ONNX_INT8_ALIASES.items():
        target = root / alias
        if alias_kind != kind:
            if target.exists():
                target.unlink()
                logger.info("removed %s: the int8 model's weights are %s", target, kind or "not of one 8-bit type")
            continue
        with atomic_output_path(target) as tmp:
            shutil.copyfile(source, tmp)
        written.append(alias)
    return written


def _weight_element_types(nodes: Iterable[Any], initializers: Iterable[Any]) -> list[int]:
    """The ONNX element type of every quantized weight in one graph's nodes (see :func:`int8_weight_type`)."""
    types: dict[str, int] = {tensor.name: tensor.data_type for tensor in initializers}
    constant: set[str] = set(types)
    producers: dict[str, Any] = {}
    consumers: dict[str, list[Any]] = {}
    nodes = list(nodes)
    for node in nodes:  # graphs are stored in topological order, so one pass settles what is constant
        inputs = [name for name in node.input if name]
        for name in inputs:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
            constant.update(node.output)
        elif inputs and all(name in constant for name in inputs):
            constant.update(node.output)

    def element_type(data: str, zero_point: str | None) -> int | None:
        # A zero point has the quantized tensor's type; without one the data's own type decides.
        if zero_point and zero_point in types:
            return types[zero_point]
        if data in types:
            return types[data]
        producer = producers.get(data)
        if producer is not None and producer.op_type == "QuantizeLinear":
            if len(producer.input) > 2 and producer.input[2] in types:
                return types[producer.input[2]]
            attribute = next((a.i for a in producer.attribute if a.name == "output_dtype"), 0)
            return attribute or 2  # the ONNX default without a zero point is uint8
        return None

    def feeds_matrix_product(name: str) -> bool:
        pending, seen = [name], set()
        while pending:
            current = pending.pop()
            for consumer in consumers.get(current, ()):
                positions = _WEIGHT_CONSUMERS.get(consumer.op_type, frozenset())
                if any(consumer.input[i] == current for i in positions if i < len(consumer.input)):
                    return True
                if consumer.op_type in _LAYOUT_OPS and consumer.input[0] == current and consumer.output[0] not in seen:
                    seen.add(consumer.output[0])
                    pending.append(consumer.output[0])
        return False

    found: list[int] = []
    for node in nodes:
        pairs: tuple[tuple[int, int | None], ...] = _INTEGER_KERNELS.get(node.op_type, ())
        if node.op_type == "DequantizeLinear" and node.input[0] in constant and feeds_matrix_product(node.output[0]):
            pairs = ((0, 2),)
        for data_index, zero_index in pairs:
            if data_index >= len(node.input) or node.input[data_index] not in constant:
                continue
            zero_point = node.input[zero_index] if zero_index is not None and zero_index < len(node.input) else None
            kind = element_type(node.input[data_index], zero_point)
            if kind is not None:
                found.append(kind)
    return found
