"""Stages 1 and 2: compress the model as the recipe says, then shrink the pruned modules
(ModelSpeedup) and write the checkpoint (weights, config, manifest, tokenizer) to the output folder.

The compressed full-size weights, masks and calibration are kept in ``.hubcompress/compressed/``,
so a run that dies in speedup resumes there instead of training again; the weights are deleted
once speedup has written the checkpoint (masks and calibration stay: a QAT export reads them).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_dir, default_mode
from ..checkpoint import save_pretrained
from ..compression.distributed import agree
from ..speedup import ModelSpeedup
from .artifacts import load_nested, save_nested
from .compress import compress_model, needs_training
from .depth import measures_depth, restore_depth
from .sentence_transformers_files import copy_sentence_transformers_modules
from . import launch
from .context import Compressed, RunContext

logger = logging.getLogger(__name__)


DEPTH_FILE = "depth.json"


def _compressed_dir(ctx: RunContext) -> Path:
    return ctx.state.work / "compressed"


def _saved_depth(folder: Path) -> dict[str, Any] | None:
    path = folder / DEPTH_FILE
    return json.loads(path.read_text()) if path.exists() else None


def run_compress(ctx: RunContext) -> dict[str, Any]:
    """Every rank of a launched run trains; rank 0 alone writes what they agreed on."""
    model = ctx.load_base()
    params_before = sum(p.numel() for p in model.parameters())
    trains = needs_training(ctx.recipe)
    train = ctx.encoded(ctx.training_split) if trains or measures_depth(ctx.recipe) else None
    teacher = ctx.teacher if ctx.recipe.distillation else None
    result = compress_model(model, teacher, ctx.recipe, train, progress=ctx.progress, device=ctx.device,
                            precision=ctx.precision, pooling=ctx.pooling)
    distributed = _distributed(ctx, result, model, trains)
    hardware = launch.hardware(ctx.launch, ctx.device)
    if ctx.launch.is_main:
        with atomic_dir(_compressed_dir(ctx)) as tmp:
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(_untied(state), str(tmp / "model.safetensors"))
            save_nested(result.masks, tmp, "masks")
            save_nested(result.calibration, tmp, "calibration")
            (tmp / DEPTH_FILE).write_text(json.dumps(result.depth))  # a resumed speedup drops the same layers
    ctx.handover.compressed = Compressed(model, result.masks, result.calibration)
    return {**result.summary(), "params_before": params_before, "distributed": distributed, "hardware": hardware}


def _distributed(ctx: RunContext, result: Any, model: torch.nn.Module, trained: bool) -> dict[str, Any]:
    """report.json's ``distributed``: the processes, the backend, the global batch (null without
    training) and whether every rank ended with the same masks and quantization scales (null in one
    process: nothing to compare); ``weights_agree`` likewise for the trained weights."""
    world = ctx.launch.world_size
    masks_agree = agree({"masks": result.masks, "calibration": result.calibration, "depth": result.depth})
    weights_agree = agree(model.state_dict())
    if not (masks_agree and weights_agree):
        logger.warning("the ranks ended compress with different %s; rank 0's are written",
                       "masks or quantization scales" if not masks_agree else "weights")
    return {"world_size": world, "backend": ctx.launch.backend,
            "global_batch_size": ctx.recipe.training.batch_size * world if trained else None,
            "masks_agree": masks_agree if world > 1 else None, "weights_agree": weights_agree if world > 1 else None}


def _untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied embeddings); copies keep the values.
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def calibration(ctx: RunContext) -> dict[str, Any]:
    """The quantizer's calibration (scales, zero points, ranges), for a QAT int8 export."""
    if ctx.handover.compressed is not None:
        return ctx.handover.compressed.calibration
    return load_nested(_compressed_dir(ctx), "calibration")


def compressed(ctx: RunContext) -> Compressed:
    """The compressed full-size model, its masks and calibration (from memory or from disk)."""
    if ctx.handover.compressed is None:
        folder = _compressed_dir(ctx)
        model = restore_depth(ctx.load_base(), _saved_depth(folder))
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
        ctx.handover.compressed = Compressed(model, load_nested(folder, "masks"), load_nested(folder, "calibration"))
    return ctx.handover.compressed


def run_speedup(ctx: RunContext) -> dict[str, Any]:
    handed = compressed(ctx)
    model, masks = handed.model, handed.masks
    report: dict[str, Any] = {"applied": False}
    dummy = ctx.task.trace_inputs(ctx)
    if masks and ctx.recipe.speedup.enabled:
        speedup = ModelSpeedup(model, dummy, masks)
        speedup.speedup_model()
        report = {"applied": True, **{k: v for k, v in speedup.report.to_dict().items() if k != "shapes"}}
        report["shortfalls"] = len(speedup.report.shortfalls)
    save_pretrained(model, ctx.output, base_model=ctx.base_model_id, revision=ctx.revision,
                    extra={"task": ctx.recipe.task, "recipe_digest": ctx.state.digest,
                           **({"depth": depth} if (depth := _saved_depth(_compressed_dir(ctx))) else {})})
    with tempfile.TemporaryDirectory(dir=ctx.state.work, prefix="tokenizer-") as tmp:
        ctx.tokenizer.save_pretrained(tmp)
        default_mode(Path(tmp))
        for item in Path(tmp).iterdir():  # each file moves in by rename: none is ever half written
            os.replace(item, ctx.output / item.name)
    # Only a task whose rows pool keeps the base's sentence-transformers modules: a classifier made from a
    # sentence-transformers base outputs logits, and SentenceTransformer would load it as an embedder.
    keeps_modules = ctx.task.pooled and (ctx.folder / "modules.json").exists()
    report["sentence_transformers"] = copy_sentence_transformers_modules(
        ctx.folder, ctx.output, hidden_width=_stream_width(model, dummy)) if keeps_modules else []
    report["loading"] = json.loads((ctx.output / "hubcompress.json").read_text())["loading"]
    ctx.handover.student = model.eval()
    report["params_after"] = sum(p.numel() for p in model.parameters())
    return report


def _stream_width(model: torch.nn.Module, dummy: dict[str, torch.Tensor]) -> int:
    """The width of the token embeddings the model outputs (narrower when the hidden width was pruned)."""
    with torch.no_grad():
        out = model.eval()(**dummy)
    hidden = getattr(out, "last_hidden_state", None)
    return int((hidden if hidden is not None else out[0]).shape[-1])


def drop_full_size_weights(ctx: RunContext) -> None:
    """Once speedup is recorded done, the checkpoint holds the weights; the full-size copy was only
    there to resume speedup (called by the next stage, so a kill in between loses nothing)."""
    if ctx.state.done("speedup"):
        (_compressed_dir(ctx) / "model.safetensors").unlink(missing_ok=True)
