"""Stage 3: ONNX export of the compressed model (fp32, and int8 as the recipe says), each file
validated against the PyTorch model in a separate ONNX Runtime process.

The files go where consumers look for them (:mod:`exporters.onnx.file_names`): fp32 in
``onnx/model.onnx``, int8 in ``onnx/model_quantized.onnx`` plus a copy named for its weight type
(``onnx/model_int8.onnx`` or ``onnx/model_uint8.onnx``), which transformers.js picks by ``dtype``.

int8 modes: ``dynamic`` (weights int8, activations quantized at run time), ``static`` (QDQ with
activation ranges calibrated on real text from the recipe's data), ``qat`` (QDQ from the scales the
quantizer learned while training).

With ``export.openvino`` the fp32 ONNX file is also converted to OpenVINO IR
(``openvino/openvino_model.xml``, checked against PyTorch in an OpenVINO process) and, with ``int8``,
quantized by NNCF on shuffled real texts of the recipe's data
(``openvino/openvino_model_qint8_quantized.xml``): :mod:`exporters.openvino`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from exporters.onnx.file_names import ONNX_FP32, ONNX_INT8, ONNX_OPTIMIZED
from exporters.openvino.file_names import OPENVINO_FP32, OPENVINO_INT8, OPENVINO_MODELS, weights_path

from ..atomic import write_text_atomic
from ..errors import CompressionError, OutputFolderError, RecipeError
from .context import RunContext

logger = logging.getLogger(__name__)

# The names validate.py and publish.py import; exporters.onnx.file_names is the one place they are set.
FP32, INT8 = ONNX_FP32, ONNX_INT8
CALIBRATION_BATCHES = 8
# Texts NNCF calibrates the OpenVINO int8 model on, one per sample: NNCF's own default count, about
# 16 s on the compressed MiniLM on 2 cores.
OPENVINO_CALIBRATION_SAMPLES = 300


def _static(ctx: RunContext, model: torch.nn.Module, config: Any, fp32: Path, int8: Path) -> dict[str, Any]:
    from exporters.onnx import quantize_static_int8

    split = "train" if ctx.data.train is not None else "eval"
    encoded = ctx.encoded(split)
    # Shuffled batches: length-sorted ones would calibrate the activation ranges on the shortest texts only.
    shuffled = encoded.train_batches(16, ctx.recipe.training.seed, with_labels=False)
    batches = [{k: v.numpy() for k, v in next(shuffled).items() if k in config.input_names}
               for _ in range(CALIBRATION_BATCHES)]
    return quantize_static_int8(fp32, int8, batches).to_dict()


def _dynamic(ctx: RunContext, model: torch.nn.Module, config: Any, fp32: Path, int8: Path) -> dict[str, Any]:
    from exporters.onnx import quantize_dynamic_int8

    return quantize_dynamic_int8(fp32, int8).to_dict()


def _qat(ctx: RunContext, model: torch.nn.Module, config: Any, fp32: Path, int8: Path) -> dict[str, Any]:
    from exporters.onnx import export_qdq_onnx

    from .shrink import calibration

    scales = fit_calibration(calibration(ctx), model)
    return export_qdq_onnx(model, None, scales, int8, config=config, opset=ctx.recipe.export.opset).to_dict()


INT8_MODES: dict[str, Callable[..., dict[str, Any]]] = {"dynamic": _dynamic, "static": _static, "qat": _qat}


def fit_calibration(calibration: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The quantizer's calibration, checked against the shrunk model: a per-channel scale of a
    module whose channels were removed cannot be matched to the channels left."""
    modules = dict(model.named_modules())
    for name, targets in calibration.items():
        module = modules.get(name)
        weight = getattr(module, "weight", None)
        entry = targets.get("weight")
        if weight is None or entry is None:
            continue
        scale = entry.get("scale")
        if isinstance(scale, torch.Tensor) and scale.numel() > 1 and scale.shape[0] != weight.shape[0]:
            raise CompressionError(
                f"{name}: the weight's per-channel scales cover {scale.shape[0]} channels but speedup left "
                f"{weight.shape[0]}; quantize weights per tensor (granularity: default) with export.int8: qat, or "
                "use export.int8: static or dynamic.")
    return calibration


def openvino_calibration_samples(ctx: RunContext, input_names: list[str], count: int) -> list[dict[str, np.ndarray]]:
    """``count`` texts of the train split (else eval), in a seeded shuffled order, one unpadded sample each:
    a split's first rows are often alike, and padding would enter the activation statistics."""
    split = "train" if ctx.data.train is not None else "eval"
    encoded = ctx.encoded(split)
    order = random.Random(ctx.recipe.training.seed).sample(range(len(encoded)), min(count, len(encoded)))
    return [{k: v.numpy() for k, v in encoded.batch([i]).items() if k in input_names} for i in order]


def check_openvino(ctx: RunContext) -> None:
    """Fail before any file is written when ``export.openvino`` cannot be honoured here."""
    from exporters.errors import OpenVINONotInstalled
    from exporters.openvino import require_openvino

    mode = ctx.recipe.export.openvino
    if not mode:
        return
    try:
        require_openvino(int8=mode == "int8")
    except OpenVINONotInstalled as error:
        raise RecipeError(f"export.openvino: {str(mode).lower()}: {error}") from None
    if mode == "int8" and ctx.recipe.data is None:
        raise RecipeError("export.openvino: int8 calibrates on the recipe's data: add a data section, or set "
                          "export.openvino: true for the fp32 IR alone.")


def _openvino(ctx: RunContext, model: torch.nn.Module, config: Any, fp32_onnx: Path) -> dict[str, Any]:
    from exporters.openvino import convert_onnx_to_openvino, quantize_openvino_int8, validate_openvino

    out: dict[str, Any] = {}
    fp32 = convert_onnx_to_openvino(fp32_onnx, ctx.output / OPENVINO_FP32)
    out["fp32"] = {"path": OPENVINO_FP32, "conversion": fp32.to_dict(),
                   "validation": _brief(validate_openvino(model, fp32.xml_path, config))}
    if ctx.recipe.export.openvino == "int8":
        samples = openvino_calibration_samples(ctx, config.input_names, OPENVINO_CALIBRATION_SAMPLES)
        made = quantize_openvino_int8(fp32.xml_path, ctx.output / OPENVINO_INT8, samples, show_progress=ctx.progress)
        check = validate_openvino(model, made.int8_path, config, raise_on_failure=False)
        # As for the ONNX int8 file: differences only; the validate stage judges int8 by agreement.
        out["int8"] = {"path": OPENVINO_INT8, "quantization": made.to_dict(),
                       "validation": {k: v for k, v in _brief(check).items() if k not in ("passed", "atol")}}
    _remove_stale_openvino(ctx.output, [entry["path"] for entry in out.values()])
    return out


def _remove_stale_openvino(folder: Path, written: list[str]) -> None:
    """An IR left by an earlier export computes an earlier model: remove what this export did not write."""
    for xml in OPENVINO_MODELS:
        if xml in written:
            continue
        for name in (xml, weights_path(xml)):
            if (folder / name).exists():
                (folder / name).unlink()
                logger.info("removed %s: this export does not write it (export.openvino)", folder / name)


def reopen_with_openvino(folder: str | Path, *, progress: bool = True) -> RunContext:
    """The run whose output is ``folder``, with ``export.openvino: int8`` written into its recipe.yaml
    (the recipe as run stays next to what it made), for ``hubcompress export --openvino``.

    Raises:
        OutputFolderError: ``folder`` has no recipe.yaml.
    """
    from .runner import reopen

    path = Path(folder) / "recipe.yaml"
    if not path.is_file():
        raise OutputFolderError(f"{folder} has no recipe.yaml: it is not the output folder of `hubcompress run`.")
    data = yaml.safe_load(path.read_text()) or {}
    if (data.get("export") or {}).get("openvino") != "int8":
        data.setdefault("export", {})["openvino"] = "int8"
        write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
    return reopen(folder, progress=progress)


def run_export(ctx: RunContext) -> dict[str, Any]:
    from exporters.onnx import (
        export_config_for_model,
        export_onnx,
        optimize_graph,
        validate_onnx,
        write_int8_aliases,
    )

    from .shrink import drop_full_size_weights

    check_openvino(ctx)
    drop_full_size_weights(ctx)
    model = ctx.student()
    spec = ctx.recipe.export
    config = export_config_for_model(model, ctx.recipe.task, atol=ctx.recipe.validation.max_abs_diff_onnx)
    fp32_path, int8_path = ctx.output / FP32, ctx.output / INT8
    exported = export_onnx(model, None, fp32_path, config=config, opset=spec.opset, prefer=spec.exporter)
    result: dict[str, Any] = {"exporter": exported.exporter, "fallback_reason": exported.fallback_reason,
                              "fp32": {"path": FP32, "validation": _brief(validate_onnx(model, fp32_path, config))}}
    if spec.int8 != "none":
        made = INT8_MODES[spec.int8](ctx, model, config, fp32_path, int8_path)
        check = validate_onnx(model, int8_path, config, raise_on_failure=False)
        # Differences only: an absolute tolerance says nothing about int8; the validate stage judges it by
        # the task metric and the agreement with the fp32 model (validation.min_int8_agreement).
        brief = {k: v for k, v in _brief(check).items() if k not in ("passed", "atol")}
        result["int8"] = {"path": INT8, "mode": spec.int8, "quantization": made, "validation": brief,
                          "aliases": write_int8_aliases(ctx.output)}
    if spec.openvino:
        result["openvino"] = _openvino(ctx, model, config, fp32_path)
    else:
        _remove_stale_openvino(ctx.output, [])
    if spec.optimize:
        # Heads and widths differ per layer after pruning: 0 lets ONNX Runtime read them from the graph.
        optimized = optimize_graph(fp32_path, ctx.output / ONNX_OPTIMIZED, model.config.model_type, 0, 0)
        result["optimized"] = {"path": ONNX_OPTIMIZED, **optimized.to_dict()}
    written = [FP32, INT8, *result["int8"]["aliases"]] if "int8" in result else [FP32]
    written += [entry["path"] for entry in result.get("openvino", {}).values()]
    logger.info("exported %s", ", ".join(written))
    return _plain(result)


def _brief(report: Any) -> dict[str, Any]:
    data = report.to_dict()
    return {"passed": data["passed"], "atol": data["atol"], "outputs": data["summary"]}


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars and paths become plain values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
