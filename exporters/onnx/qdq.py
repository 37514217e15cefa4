"""Simulated int8 made real: a model plus a calibration config become an ONNX graph with
QuantizeLinear / DequantizeLinear nodes carrying exactly those scales and zero points, which
ONNX Runtime fuses into int8 kernels (MatMulIntegerToFloat, QLinearConv, QLinearMatMul, ...).

The calibration config is plain data, ``{module name: {target: {"scale", "zero_point",
"quant_dtype", ...}}}``: targets are parameters (``weight``, ``bias``, ...), ``_input_`` /
``_input_{i}`` / ``_input_{name}`` and ``_output_`` / ``_output_{i}`` / ``_output_{key}``.
Scales are 0-dim (per tensor) or broadcastable with one non-1 dim (per axis; blocks along one
axis are repeated out to it). While exporting, each target goes through torch's
``fake_quantize_per_{tensor,channel}_affine``, which the TorchScript exporter writes as Q/DQ.
int8 activations are written as uint8 with the zero point moved by 128 (the same numbers).

Example:
    >>> import tempfile, pathlib, torch
    >>> from torch import nn
    >>> from exporters.onnx.qdq import export_qdq_onnx, measure_qdq_agreement
    >>> model = nn.Sequential(nn.Linear(8, 4)).eval()
    >>> calibration = {"0": {"_input_": {"scale": torch.tensor(0.03), "zero_point": torch.tensor(0),
    ...                                  "quant_dtype": "int8"},
    ...                      "weight": {"scale": torch.tensor(0.005), "zero_point": torch.tensor(0),
    ...                                 "quant_dtype": "int8"}}}
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.qdq.onnx"
    >>> result = export_qdq_onnx(model, {"input": torch.randn(2, 3, 8)}, calibration, path)
    >>> result.int8_op_counts
    {'MatMulIntegerToFloat': 1}
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporters.errors import UnsupportedQuantization
from exporters.onnx.export import ExportResult, export_onnx
from exporters.onnx.model_io import NamedOutputsModule, as_model_tensors, eval_no_grad
from exporters.onnx.registry import OnnxConfig

logger = logging.getLogger(__name__)

# The integer ranges ONNX QuantizeLinear saturates to, by dtype (narrow-range int8 fits inside).
QDQ_RANGES: dict[str, tuple[int, int]] = {"int8": (-128, 127), "uint8": (0, 255)}
# Op types that mean ONNX Runtime runs integer arithmetic.
INT8_KERNEL_OPS = frozenset({"MatMulInteger", "MatMulIntegerToFloat", "QLinearMatMul", "QLinearConv", "ConvInteger",
                             "QGemm", "QLinearAdd", "QLinearMul", "QAttention", "DynamicQuantizeMatMul"})
_ACTIVATION = re.compile(r"^_(input|output)_(.*)$")

Calibration = Mapping[str, Mapping[str, Mapping[str, Any]]]


@dataclass
class QdqExportResult:
    """The written file, the targets given Q/DQ, and the int8 ops ONNX Runtime runs."""

    export: ExportResult
    quantized_targets: list[str]
    qdq_op_counts: dict[str, int]
    int8_op_counts: dict[str, int]

    @property
    def output_path(self) -> str:
        return self.export.output_path

    def to_dict(self) -> dict[str, Any]:
        return {"export": self.export.to_dict(), "quantized_targets": self.quantized_targets,
                "qdq_op_counts": self.qdq_op_counts, "int8_op_counts": self.int8_op_counts}


@dataclass
class QdqAgreement:
    """How far ONNX Runtime's int8 model is from the fake-quantized PyTorch model, per output."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    argmax_agreement: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fake_quant_fn(module_name: str, target: str, entry: Mapping[str, Any]) -> Any:
    """A function tensor -> fake-quantized tensor for one calibration entry."""
    dtype = entry.get("quant_dtype")
    if dtype not in QDQ_RANGES:
        raise UnsupportedQuantization(module_name, target, f"quant_dtype {dtype!r} has no 8-bit ONNX form")
    if entry.get("quant_bits", 8) < 2 and _ACTIVATION.match(target):
        raise UnsupportedQuantization(module_name, target, "binary activations (sign) are not a linear quantization")
    qmin, qmax = QDQ_RANGES[dtype]
    scale = torch.as_tensor(entry["scale"], dtype=torch.float32).detach().cpu()
    zero_point = torch.as_tensor(entry["zero_point"]).detach().cpu().round().to(torch.int32)
    if dtype == "int8" and _ACTIVATION.match(target):
        # The same grid shifted by 128: ONNX Runtime's CPU int8 kernels want uint8 activations,
        # and it cannot convert an int8 Q/DQ that several nodes share (Q, K, V) by itself.
        qmin, qmax, zero_point = 0, 255, zero_point + 128
    if scale.numel() == 1:
        s, z = float(scale.reshape(())), int(zero_point.reshape(()))
        return lambda t: torch.fake_quantize_per_tensor_affine(t, s, z, qmin, qmax)
    axes = [d for d, n in enumerate(scale.shape) if n > 1]
    if len(axes) != 1:
        raise UnsupportedQuantization(module_name, target, f"a scale of shape {tuple(scale.shape)} varies along "
                                                           "more than one axis")

    def per_axis(t: torch.Tensor) -> torch.Tensor:
        axis = t.dim() - scale.dim() + axes[0]  # scales broadcast from the right
        repeat = t.shape[axis] // scale.shape[axes[0]]
        if axis < 0 or repeat * scale.shape[axes[0]] != t.shape[axis]:
            raise UnsupportedQuantization(module_name, target, f"scale shape {tuple(scale.shape)} does not fit a "
                                                               f"tensor of shape {tuple(t.shape)}")
        s = scale.flatten().repeat_interleave(repeat).to(t.device)
        z = zero_point.flatten().repeat_interleave(repeat).to(t.device)
        return torch.fake_quantize_per_channel_affine(t, s, z, axis, qmin, qmax)
    return per_axis


def _apply_to_arguments(module: nn.Module, args: tuple, kwargs: dict, fns: dict[str, Any]) -> tuple[tuple, dict]:
    import inspect

    names = [p for p in list(inspect.signature(type(module).forward).parameters)[1:]]
    args = list(args)
    for suffix, fn in fns.items():
        position = 0 if suffix == "" else int(suffix) if suffix.isdigit() else None
        key = suffix if position is None else (names[position] if position < len(names) else None)
        if position is not None and position < len(args):
            args[position] = fn(args[position])
        elif key in kwargs:
            kwargs[key] = fn(kwargs[key])
        else:
            raise UnsupportedQuantization(type(module).__name__, f"_input_{suffix}", "the module was not given it")
    return tuple(args), kwargs


def _apply_to_output(output: Any, fns: dict[str, Any]) -> Any:
    for suffix, fn in fns.items():
        position = 0 if suffix == "" else int(suffix) if suffix.isdigit() else None
        if isinstance(output, torch.Tensor) and position == 0:
            output = fn(output)
        elif isinstance(output, (tuple, list)) and position is not None:
            items = list(output)
            items[position] = fn(items[position])
            output = type(output)(items)
        elif isinstance(output, Mapping):
            key = suffix if position is None else list(output.keys())[position]
            output[key] = fn(output[key])
        else:
            raise UnsupportedQuantization(type(output).__name__, f"_output_{suffix}", "the module does not return it")
    return output


@contextlib.contextmanager
def fake_quantized(model: nn.Module, calibration: Calibration) -> Iterator[list[str]]:
    """Within this block ``model`` computes with every calibrated target fake-quantized by
    torch's built-in ops (what the exporter turns into Q/DQ). Yields the targets' names."""
    modules = dict(model.named_modules())
    handles, names = [], []
    for module_name, targets in calibration.items():
        if module_name not in modules:
            raise UnsupportedQuantization(module_name, "*", "the model has no such module (unwrap and bake the model "
                                                            "before exporting; fused BatchNorms become Identity)")
        module = modules[module_name]
        inputs, outputs, params = {}, {}, {}
        for target, entry in targets.items():
            fn = _fake_quant_fn(module_name, target, entry)
            m = _ACTIVATION.match(target)
            (inputs if m and m.group(1) == "input" else outputs if m else params)[m.group(2) if m else target] = fn
            names.append(f"{module_name}.{target}")
        saved: dict[str, torch.Tensor] = {}

        def pre(mod: nn.Module, args: tuple, kwargs: dict, inputs=inputs, params=params, saved=saved) -> Any:
            for name, fn in params.items():
                saved[name] = mod._parameters[name]
                mod._parameters[name] = fn(saved[name])
            return _apply_to_arguments(mod, args, kwargs, inputs) if inputs else None

        def post(mod: nn.Module, args: tuple, kwargs: dict, output: Any, outputs=outputs, saved=saved) -> Any:
            mod._parameters.update(saved)
            saved.clear()
            return _apply_to_output(output, outputs) if outputs else None

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        yield names
    finally:
        for handle in handles:
            handle.remove()


def export_qdq_onnx(model: nn.Module, example_inputs: Mapping[str, torch.Tensor | np.ndarray] | None,
                    calibration: Calibration, output_path: str | os.PathLike[str], *,
                    config: OnnxConfig | None = None, opset: int = 17) -> QdqExportResult:
    """Export ``model`` (plain, unwrapped) with Q/DQ nodes from ``calibration``, written
    atomically; the TorchScript exporter is used because it writes fake-quantize ops as Q/DQ.

    Raises:
        UnsupportedQuantization: an entry is not 8-bit, or its scale varies along several axes.
        OnnxExportFailed, OnnxCheckerFailed: as :func:`exporters.onnx.export_onnx`.
    """
    with fake_quantized(model, calibration) as names:
        exported = export_onnx(model, example_inputs, output_path, config=config, opset=opset, dynamo=False)
    import onnx

    graph = onnx.load(str(output_path), load_external_data=False).graph
    counts = Counter(node.op_type for node in graph.node)
    result = QdqExportResult(exported, names, {op: counts[op] for op in ("QuantizeLinear", "DequantizeLinear")},
                             ort_int8_op_counts(output_path))
    logger.info("wrote %s: %d targets as Q/DQ, ONNX Runtime int8 ops %s", output_path, len(names),
                result.int8_op_counts)
    return result


def ort_int8_op_counts(onnx_path: str | os.PathLike[str]) -> dict[str, int]:
    """The integer-kernel ops in the graph ONNX Runtime actually runs (after its QDQ fusions)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="exporters-qdq-") as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    counts = Counter(node.op_type for node in graph.node if node.op_type in INT8_KERNEL_OPS)
    return dict(sorted(counts.items()))


def measure_qdq_agreement(reference: nn.Module, onnx_path: str | os.PathLike[str],
                          input_batches: Sequence[Mapping[str, np.ndarray]], *, output_names: Sequence[str],
                          argmax_outputs: Sequence[str] | None = None,
                          forward_kwargs: Mapping[str, Any] | None = None) -> QdqAgreement:
    """Run ``onnx_path`` in ONNX Runtime (in this process) and ``reference`` (the fake-quantized
    PyTorch model) on the same batches: max abs diff per output and, for ``argmax_outputs``
    (default: the outputs with 'logits' in their name, else every 2-d output), the fraction of
    rows whose argmax over the last axis agrees."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    result = QdqAgreement()
    agree: Counter[str] = Counter()
    with eval_no_grad(reference):
        wrapper = NamedOutputsModule(reference, input_names, output_names, forward_kwargs)
        for batch in input_batches:
            tensors = as_model_tensors(reference, {k: batch[k] for k in input_names})
            expected = [t.detach().cpu().numpy() for t in wrapper(*(tensors[k] for k in input_names))]
            got = session.run(list(output_names), {k: np.asarray(batch[k]) for k in input_names})
            chosen = argmax_outputs if argmax_outputs is not None else (
                [n for n in output_names if "logits" in n]
                or [n for n, e in zip(output_names, expected) if e.ndim == 2])
            for name, want, have in zip(output_names, expected, got):
                diff = float(np.max(np.abs(want - have))) if want.size else 0.0
                result.max_abs_diff[name] = max(result.max_abs_diff.get(name, 0.0), diff)
                if name in chosen:
                    rows = want.reshape(-1, want.shape[-1]).argmax(-1) == have.reshape(-1, have.shape[-1]).argmax(-1)
                    agree[name] += int(rows.sum())
                    result.rows[name] = result.rows.get(name, 0) + rows.size
    result.argmax_agreement = {name: agree[name] / rows for name, rows in result.rows.items() if rows}
    return result
