"""`hubcompress recipe check`: build what `run` builds from a recipe — the compressor chain on the
model's skeleton (its config on the meta device: no weights are loaded), the ONNX export config and
the gate — without training, so a recipe that check accepts does not fail in run for the same reasons.

Example:
    >>> import pathlib, tempfile
    >>> from transformers import BertConfig, BertModel
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                      intermediate_size=64, vocab_size=50)).save_pretrained(folder)
    >>> recipe = folder / "recipe.yaml"
    >>> _ = recipe.write_text("task: feature-extraction\\npruning: {pruner: L1NormPruner, heads: 0.5}\\n")
    >>> check_recipe(recipe, str(folder)).built
    ['L1NormPruner on 4 modules', 'ONNX export: bert, feature-extraction']
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import HubError, ModelSourceError, UnsupportedModelError
from ..hub import resolve_model_source
from ..recipe import Recipe, load_recipe, located
from .compress import build_chain, needs_training
from .data_files import check_data_paths
from .text_sets import check_text_set_paths
from .heads import missing_head, missing_head_error
from .tasks import TASKS

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    recipe: Recipe
    model: str | None
    built: list[str] = field(default_factory=list)  # what was built, one line each
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why


def model_skeleton(recipe: Recipe, folder: Path) -> torch.nn.Module:
    """The recipe's task model built from ``folder``'s config on the meta device (no weights)."""
    import transformers

    trust = bool(recipe.model and recipe.model.trust_remote_code)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust)
        auto = getattr(transformers, TASKS[recipe.task].auto_class)
        with torch.device("meta"):
            return auto.from_config(config, trust_remote_code=trust)
    except (OSError, ValueError, KeyError) as error:
        raise ModelSourceError(f"cannot build {folder} as {TASKS[recipe.task].auto_class} for {recipe.task}: "
                               f"{str(error).splitlines()[0]}") from None


def _no_training(*args: Any, **kwargs: Any) -> None:
    return None


def _as_deep_as_run(recipe: Recipe, skeleton: torch.nn.Module) -> dict[str, Any] | None:
    """Drop from ``skeleton`` as many layers as ``pruning.drop_layers`` will: the listed ones, or for a
    count or fraction the last ones (which layers go is measured on data in run; the kept layers are
    renumbered 0..k-1 whichever they are, so config lists are checked against the same names).
    Returns the drop as the compress stage records it (``kept``, ``layers_before``), or None."""
    from ..compression.pruning import depth
    from ..errors import ConfigListError
    from .depth import KEY, drop_count

    value = recipe.pruning.drop_layers if recipe.pruning else None
    if value is None:
        return None
    try:
        count = len(depth.layer_list(skeleton)[1])
        drop = value if isinstance(value, list) else list(range(count - drop_count(value, count), count))
        return {"kept": depth.drop_layers(skeleton, drop), "layers_before": count}
    except ConfigListError as error:
        raise located(recipe, KEY, error.detail) from None


def build_compressors(recipe: Recipe, skeleton: torch.nn.Module) -> list[str]:
    """Build the recipe's compressor chain on ``skeleton`` (:func:`model_skeleton`: nothing trains) and
    name each compressor built; raises what ``run`` would raise for a wrong config list, located in
    the recipe. ``run`` calls it before its first stage, so a typo never waits for a teacher's fine-tuning.
    The skeleton first loses the layers ``pruning.drop_layers`` drops, as the compress stage does."""
    from .. import compression

    # The teacher keeps every layer, as in run: a recipe's ``link`` may name any of them.
    teacher = copy.deepcopy(skeleton) if recipe.distillation else None
    dropped = _as_deep_as_run(recipe, skeleton)
    evaluator = None
    if needs_training(recipe):
        optimizer = torch.optim.SGD(skeleton.parameters(), lr=0.1)
        evaluator = compression.TorchEvaluator(_no_training, optimizer, lambda batch, m: m(**batch))
    chain = build_chain(skeleton, teacher, recipe, evaluator, total=100, depth=dropped)
    built = []
    for role in ("pruner", "quantizer", "distiller"):
        compressor = chain[role]
        if compressor is not None:
            inner = getattr(compressor, "inner", None)  # a schedule (AGPPruner) drives a pruner
            name = type(compressor).__name__ + (f"({type(inner).__name__})" if inner is not None else "")
            count = len(getattr(compressor, "_target_spaces", {}) or {})
            built.append(f"{name} on {count} modules" if count else name)
    return built


def check_recipe(path: str | Path, model: str | None = None) -> CheckResult:
    """Validate ``path`` and build its compressors, export config and gate for ``model`` (default: the
    recipe's model.id) when the model's files are on this machine; raises the error run would raise."""
    path = Path(path)
    recipe = load_recipe(path)
    check_data_paths(recipe, path.resolve().parent)
    check_text_set_paths(recipe, path.resolve().parent)
    source = model or (recipe.model.id if recipe.model else None)
    result = CheckResult(recipe, source)
    if source is None:
        result.notes.append("no model named (model.id or the command's argument): compressors not built")
        return result
    try:
        folder = resolve_model_source(source, recipe.model.revision if recipe.model else None, local_files_only=True)
    except HubError as error:
        result.notes.append(f"{source} is not on this machine, so the config lists were not checked against its "
                            f"modules ({str(error).splitlines()[0]})")
        return result
    skeleton = model_skeleton(recipe, Path(folder))
    head = missing_head(folder, skeleton.config, TASKS[recipe.task].auto_class,
                        trust_remote_code=bool(recipe.model and recipe.model.trust_remote_code))
    if head and recipe.teacher is None:
        raise missing_head_error(head, source, recipe.task)
    if recipe.teacher:
        budget = recipe.teacher.finetune
        size = f"{budget.epochs:g} epoch{'' if budget.epochs == 1 else 's'}" if budget.epochs else f"{budget.steps} steps"
        start = f"a new head ({', '.join(head)})" if head else "the checkpoint's head"
        result.built.append(f"teacher: fine-tuned for {size} from {start}")
    result.built += build_compressors(recipe, skeleton)
    if recipe.export.onnx:
        from exporters.errors import UnsupportedModelType
        from exporters.onnx import export_config_for_model

        try:
            config = export_config_for_model(skeleton, recipe.task)
        except UnsupportedModelType as error:
            raise UnsupportedModelError(f"{path}: export.onnx: {error}") from None
        result.built.append(f"ONNX export: {config.model_type}, {config.task}")
    return result
