"""The recipe's ``pruning.drop_layers``, applied by the compress stage before anything trains.

``drop_layers`` is one key with three forms:
- a list of original layer indices, ``[1, 3]``: exactly those go;
- a count, ``3``, or a fraction of the layer count, ``0.5`` (rounded, at least one layer, never
  all): the layers with the lowest *block influence* go, measured on up to 256 texts of the
  recipe's training (distillation) text with the original model, before any other compression.

The layers are dropped before the pruner and the distiller are built, so the student trains
without them, width masks name the kept (renumbered) layers, and the layerwise distiller links
each kept layer to the teacher layer it stands in for (``depth.distillation_links``), in the default
config list and in one the recipe writes (a target without a ``link``). The result
(dropped, kept, how chosen, the scores) goes into report.json's ``compression.depth``, the
manifest and the model card.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> from hubcompress.recipe import parse_recipe
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=50))
    >>> recipe = parse_recipe("task: feature-extraction\\npruning: {drop_layers: [0, 2]}\\n")
    >>> apply_depth(model, recipe, None)
    {'layers_before': 4, 'dropped': [0, 2], 'kept': [1, 3], 'chosen_by': 'recipe'}
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..compression.pruning import depth
from ..errors import ConfigListError
from ..recipe import Recipe, located
from .batches import Encoded

logger = logging.getLogger(__name__)
KEY = ("pruning", "drop_layers")
IMPORTANCE_TEXTS = 256  # enough for stable block-influence ranks; a few seconds of forward passes
METHOD = "block influence: 1 - cos(layer input, layer output) over the tokens of the training text, lowest dropped"


def drop_count(value: int | float, layers: int) -> int:
    """How many layers a count or a fraction means for a model of ``layers`` layers.

    Example:
        >>> drop_count(0.5, 6), drop_count(2, 6), drop_count(0.01, 6)
        (3, 2, 1)
    """
    return value if isinstance(value, int) else max(1, round(value * layers))


def apply_depth(model: nn.Module, recipe: Recipe, train: Encoded | None, *,
                device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """Drop the layers ``recipe.pruning.drop_layers`` names or counts; None when it names none.

    Raises:
        RecipeError: at ``pruning.drop_layers``: an index out of range, every layer dropped, an
            architecture whose layers cannot be dropped, or no text to measure importance on.
    """
    value = recipe.pruning.drop_layers if recipe.pruning else None
    if value is None:
        return None
    try:
        _, layers = depth.layer_list(model)
        count = len(layers)
        if isinstance(value, list):
            drop, chosen_by, scores = value, "recipe", None
        else:
            if train is None:
                raise ConfigListError("a count or fraction of layers is chosen on the training text, and this run "
                                      "has none: add data, or list the layer indices")
            n = drop_count(value, count)
            if n >= count:
                raise ConfigListError(f"dropping {n} of {count} layers leaves none; keep at least one")
            batch_size = max(1, min(recipe.training.batch_size, IMPORTANCE_TEXTS, len(train)))
            batches = itertools.islice(train.train_batches(batch_size, recipe.training.seed, with_labels=False),
                                       math.ceil(min(len(train), IMPORTANCE_TEXTS) / batch_size))
            model.to(device)
            scores = depth.block_influence(model, batches)
            drop, chosen_by = depth.least_important(scores, n), "block influence"
        kept = depth.drop_layers(model, drop)
    except ConfigListError as error:
        raise located(recipe, KEY, error.detail) from None
    result: dict[str, Any] = {"layers_before": count, "dropped": sorted(drop), "kept": kept, "chosen_by": chosen_by}
    if scores is not None:
        result["scores"] = [float(f"{s:.4g}") for s in scores]
        result["method"] = METHOD
    logger.info("dropped layers %s of %d (%s)", result["dropped"], count, chosen_by)
    return result


def restore_depth(model: nn.Module, summary: dict[str, Any] | None) -> nn.Module:
    """Drop the same layers again from a fresh copy of the base (a resumed run reloading its
    compressed weights); a no-op for a run that dropped none."""
    if summary:
        depth.drop_layers(model, summary["dropped"])
    return model


def teacher_counterpart(model: nn.Module, summary: dict[str, Any]) -> Callable[[str, str], str]:
    """The distillers' ``auto_link`` after a layer drop: a target of the student without a ``link``
    (the default layerwise config, or one the recipe wrote) reads the teacher module it stands in
    for (see ``depth.teacher_counterparts``), not the one that has its renumbered name.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                              intermediate_size=64, vocab_size=50))
        >>> find = teacher_counterpart(model, {"kept": [0, 3], "layers_before": 4})
        >>> find("encoder.layer.0", "_output_"), find("encoder.layer.1.output.dense", "_output_")
        ('encoder.layer.2', 'encoder.layer.3.output.dense')
    """
    name, _ = depth.layer_list(model)
    return depth.teacher_counterparts(name, summary["kept"], summary["layers_before"])


def measures_depth(recipe: Recipe) -> bool:
    """Whether ``drop_layers`` is a count or fraction, chosen on the training text (which must be loaded).

    Example:
        >>> from hubcompress.recipe import parse_recipe
        >>> measures_depth(parse_recipe("task: feature-extraction\\npruning: {drop_layers: [1]}\\n"))
        False
    """
    value = recipe.pruning.drop_layers if recipe.pruning else None
    return value is not None and not isinstance(value, list)
