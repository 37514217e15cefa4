"""Export a PyTorch module to one ONNX file with dynamic batch and sequence axes.

The dynamo exporter (``torch.export`` based) is tried first; if it fails the TorchScript
exporter is tried, and the result records which one produced the file and why the first failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from exporters.errors import OnnxCheckerFailed, OnnxExportFailed
from exporters.onnx.atomic_files import atomic_output_path
from exporters.onnx.model_io import (
    NamedOutputsModule,
    as_model_tensors,
    eval_no_grad,
    infer_output_axes,
    select_outputs,
)
from exporters.onnx.registry import AxisMap, OnnxConfig

logger = logging.getLogger(__name__)

# protobuf refuses to serialise a message over 2 GiB, which caps a single-file ONNX model.
SINGLE_FILE_LIMIT_BYTES = 2 * 1024**3
# Sizes of the dummy inputs built from a config when no example inputs are given; both > 1
# because torch.export specialises axes of size 0 and 1 to constants.
EXPORT_BATCH_SIZE = 2
EXPORT_SEQUENCE_LENGTH = 8

ExporterName = Literal["dynamo", "torchscript"]


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how."""

    output_path: str
    exporter: ExporterName
    opset: int  # the opset the file declares, which may differ from the one asked for
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, AxisMap]
    file_size_bytes: int
    elapsed_s: float
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (axis keys become strings, as JSON requires)."""
        data = asdict(self)
        data["dynamic_axes"] = {name: {str(k): v for k, v in axes.items()} for name, axes in self.dynamic_axes.items()}
        return data


def export_onnx(
    model: nn.Module,
    example_inputs: Mapping[str, torch.Tensor | np.ndarray] | None,
    output_path: str | Path,
    *,
    config: OnnxConfig | None = None,
    opset: int = 17,
    dynamo: bool = True,
    prefer: ExporterName = "dynamo",
) -> ExportResult:
    """Export ``model`` to a single ONNX file at ``output_path``, written atomically.

    Args:
        model: the module to export; it is called as ``model(**inputs)``.
        example_inputs: tensors by input name, used to trace the model. ``None`` builds dummy
            inputs from ``config``. Use sizes above 1 on dynamic axes: size-1 axes get frozen.
        output_path: where the ``.onnx`` file goes; its folder is created.
        config: the export config (input/output names, dynamic axes, forward kwargs). Without one,
            inputs are ``example_inputs``' keys with dynamic axes 0 (batch) and 1 (sequence), and
            outputs are the tensors the model returns (see :func:`infer_output_axes`).
        opset: ONNX opset version.
        dynamo: allow the dynamo exporter; ``False`` uses TorchScript alone.
        prefer: the exporter tried first when both are allowed; the other is the fallback.
            TorchScript's BERT-family graphs ran 1.2-1.4x faster in ONNX Runtime than dynamo's
            (benchmarks/RESULTS.md), dynamo covers more models.

    Raises:
        OnnxExportFailed: no exporter produced a valid graph (``.attempts`` holds each reason).
        OnnxCheckerFailed: every exporter ran but the checker rejected each graph.
        In both cases ``output_path`` is left as it was (absent, or the previous file).

    A graph that the ONNX checker rejects counts as a failed attempt, so a dynamo export that
    converts badly to ``opset`` falls back to TorchScript too; ``ExportResult.fallback_reason``
    says why.

    Example:
        >>> import tempfile, pathlib
        >>> from transformers import BertConfig, BertModel
        >>> from exporters.onnx import export_onnx, export_config_for_model
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                              intermediate_size=37, vocab_size=100))
        >>> config = export_config_for_model(model)
        >>> result = export_onnx(model, None, pathlib.Path(tempfile.mkdtemp()) / "model.onnx", config=config)
        >>> result.output_names
        ['last_hidden_state', 'pooler_output']
    """
    started = time.perf_counter()
    output_path = Path(output_path)
    _refuse_oversized(model)
    if example_inputs is None:
        if config is None:
            raise ValueError("export_onnx needs example_inputs or a config to build dummy inputs from")
        example_inputs = config.generate_dummy_inputs(EXPORT_BATCH_SIZE, EXPORT_SEQUENCE_LENGTH)
    tensors = as_model_tensors(model, example_inputs)
    forward_kwargs = config.FORWARD_KWARGS if config is not None else {}

    if config is not None:
        missing = [name for name in config.input_names if name not in tensors]
        if missing:
            raise ValueError(f"example_inputs lacks {missing}, which the {config!r} exports")
        input_axes, output_axes = config.inputs, config.outputs
    else:
        input_axes = {name: {0: "batch", 1: "sequence"} if t.ndim >= 2 else {0: "batch"} for name, t in tensors.items()}
        output_axes = None
    _warn_on_frozen_axes(tensors, input_axes)

    input_names = list(input_axes)
    args = tuple(tensors[name] for name in input_names)
    with eval_no_grad(model):
        # One eager pass first: it names the outputs (without a config) and surfaces model errors
        # as themselves rather than as exporter tracebacks.
        try:
            eager_outputs = model(**dict(zip(input_names, args, strict=True)), **forward_kwargs)
        except Exception as err:
            raise OnnxExportFailed(f"the model fails on the example inputs: {type(err).__name__}: {err}") from err
        if output_axes is None:
            sequence = args[0].shape[1] if args and args[0].ndim >= 2 else None
            output_axes = infer_output_axes(eager_outputs, sequence)
        output_names = list(output_axes)
        select_outputs(eager_outputs, output_names)  # fail now, with a clear message, on a wrong name
        wrapper = NamedOutputsModule(model, input_names, output_names, forward_kwargs).eval()
        dynamic_axes = {name: dict(axes) for name, axes in {**input_axes, **output_axes}.items()}

        with atomic_output_path(output_path) as tmp_path:
            exporter, file_opset, fallback_reason = _export_with_fallback(
                wrapper, args, tmp_path, output_path, input_names, output_names, dynamic_axes, opset,
                ([prefer, "torchscript" if prefer == "dynamo" else "dynamo"] if dynamo else ["torchscript"]),
            )
            size = tmp_path.stat().st_size

    elapsed = time.perf_counter() - started
    logger.info("exported %s with the %s exporter in %.1f s (%d bytes)", output_path, exporter, elapsed, size)
    return ExportResult(
        output_path=str(output_path),
        exporter=exporter,
        opset=file_opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        file_size_bytes=size,
        elapsed_s=elapsed,
        fallback_reason=fallback_reason,
    )


def _export_with_fallback(
    wrapper: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    final_path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, AxisMap],
    opset: int,
    exporters: list[ExporterName],
) -> tuple[ExporterName, int, str | None]:
    """Export to ``path`` with the first exporter whose graph also passes the checker.

    A graph the checker rejects counts as a failed attempt: the dynamo exporter builds at its own
    minimum opset and converts down, and that conversion can leave ops invalid at ``opset``.
    """
    attempts: dict[str, str] = {}
    checker_failures: list[OnnxCheckerFailed] = []
    for name in exporters:
        try:
            _run_torch_exporter(name, wrapper, args, path, input_names, output_names, dynamic_axes, opset)
            file_opset = _check_graph(path, final_path)
        except OnnxCheckerFailed as err:
            checker_failures.append(err)
            attempts[name] = str(err)[:2000]
        except Exception as err:  # the exporters raise many unrelated types; all mean "try the next one"
            attempts[name] = f"{type(err).__name__}: {err}".strip()[:2000]
        else:
            return name, file_opset, attempts.get(exporters[0]) if name != exporters[0] else None
        logger.warning("the %s ONNX exporter failed: %s", name, attempts[name].splitlines()[0])
    if len(checker_failures) == len(exporters):
        raise checker_failures[-1]
    raise OnnxExportFailed(f"no ONNX exporter produced a valid graph ({', '.join(exporters)} tried)", attempts)


def _run_torch_exporter(
    name: ExporterName,
    wrapper: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, AxisMap],
    opset: int,
) -> None:
    common: dict[str, Any] = dict(
        input_names=input_names, output_names=output_names, opset_version=opset, verbose=False
    )
    if name == "dynamo":
        # dynamic_shapes follows forward's signature: one entry for *tensors, holding one axis map
        # per tensor. String axis names become Dim.DYNAMIC and name the graph's symbolic dims;
        # output axes follow from the inputs'.
        dynamic_shapes = (tuple(dynamic_axes[input_name] for input_name in input_names),)
        # external_data=False keeps weights inside the one file that os.replace moves into place.
        torch.onnx.export(
            wrapper, args, str(path), dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes, **common
        )
    else:
        torch.onnx.export(
            wrapper, args, str(path), dynamo=False, dynamic_axes=dynamic_axes, do_constant_folding=True, **common
        )


def _check_graph(tmp_path: Path, final_path: Path) -> int:
    """Run the ONNX checker (with shape inference) and return the default-domain opset the file declares."""
    import onnx  # imported late: only exporting needs it, and it is an optional dependency

    try:
        onnx.checker.check_model(str(tmp_path), full_check=True)
        model = onnx.load(str(tmp_path), load_external_data=False)
    except Exception as err:
        raise OnnxCheckerFailed(str(final_path), f"{type(err).__name__}: {err}") from err
    # The dynamo exporter builds at its own minimum opset and converts down; report what the file holds.
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), -1)


def _refuse_oversized(model: nn.Module) -> None:
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weight_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    if weight_bytes >= SINGLE_FILE_LIMIT_BYTES:
        raise OnnxExportFailed(
            f"the model holds {weight_bytes / 1024**3:.1f} GiB of weights, over the 2 GiB a single ONNX file "
            "can hold; external-data export (weights in side files) is not supported yet"
        )


def _warn_on_frozen_axes(tensors: Mapping[str, torch.Tensor], input_axes: Mapping[str, AxisMap]) -> None:
    for name, axes in input_axes.items():
        for axis, axis_name in axes.items():
            tensor = tensors.get(name)
            if tensor is not None and tensor.ndim > axis and tensor.shape[axis] <= 1:
                logger.warning(
                    "input %r has size %d on dynamic axis %r: the exporter may freeze it; use a size above 1",
                    name,
                    tensor.shape[axis],
                    axis_name,
                )
