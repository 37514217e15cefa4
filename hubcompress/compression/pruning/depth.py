"""Depth pruning: drop whole transformer layers, and measure which ones matter least.

A model without some of its layers is the stock architecture with a smaller layer count: the
kept layers move up in the layer ``ModuleList`` (found through the architecture registry: the
list the blocks of :func:`~hubcompress.architectures.model_layout` live in), each layer's own
index (``layer_idx``, what a KV cache is indexed by) is renumbered, and the config's layer count
(``ConfigNames.layers``) and per-layer lists (``layer_types``) follow. So a depth-only model is
saved as a plain transformers checkpoint, and width pruning of the kept layers works on it as on
any model (drop first, then prune: the masks name the renumbered layers).

Importance is *block influence* (ShortGPT, Men et al. 2024): ``1 - cos(x, f(x))`` between a
layer's input and output hidden states, averaged over the real (unpadded) tokens of some batches;
a layer that barely turns the residual stream is the one to drop. It needs forward passes only
(no gradients, no teacher), and it is measured once on the original model, before training.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=50))
    >>> drop_layers(model, [1, 2])
    [0, 3]
    >>> model.config.num_hidden_layers, len(model.encoder.layer)
    (2, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ...architectures import architecture_for, model_layout
from ...errors import ConfigListError

# model_type -> fn(kept original indices, layer count) -> why the stock class cannot hold that
# selection (None: it can). For architectures whose layers are not all built alike.
DepthRule = Callable[[list[int], int], "str | None"]
DEPTH_RULES: dict[str, DepthRule] = {}


def register_depth_rule(*model_types: str) -> Callable[[DepthRule], DepthRule]:
    """Register a check of which layer selections an architecture's stock class can rebuild.

    Example:
        >>> @register_depth_rule("my-model")
        ... def _first_stays(kept, count):
        ...     return None if kept[0] == 0 else "layer 0 has no input norm"
        >>> DEPTH_RULES["my-model"]([1], 2)
        'layer 0 has no input norm'
    """
    def deco(fn: DepthRule) -> DepthRule:
        for model_type in model_types:
            DEPTH_RULES[model_type] = fn
        return fn
    return deco


@register_depth_rule("modernbert")
def _modernbert(kept: list[int], count: int) -> str | None:
    # ModernBERT builds layer 0 without an attention norm (the embeddings end with one); a stock
    # model with the first layer dropped would build the new layer 0 without the norm it learned.
    return None if kept[0] == 0 else "ModernBERT's first layer is built differently (no attention norm): keep layer 0"


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The name and the ``ModuleList`` that hold the model's transformer layers.

    Raises:
        ConfigListError: the blocks do not live in one list with one entry per layer (ALBERT shares
            one set of weights between all its layers: there is nothing to drop).

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> m = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2,
        ...                                   num_attention_heads=4, intermediate_size=64, vocab_size=50))
        >>> layer_list(m)[0]
        'bert.encoder.layer'
    """
    arch = architecture_for(model)
    blocks = model_layout(model).blocks
    parents = {block.prefix.rpartition(".")[0] for block in blocks}
    count = arch.config_value(model.config, "layers")
    parent = parents.pop() if len(parents) == 1 else None
    modules = dict(model.named_modules())
    if parent is None or not isinstance(modules.get(parent), nn.ModuleList) or len(modules[parent]) != count:
        raise ConfigListError(f"{arch.model_types[0]}: its {count} layers are not {count} entries of one module list "
                              f"(blocks: {[b.prefix for b in blocks][:3]}...); depth pruning needs one module per layer.")
    return parent, modules[parent]


def kept_after_drop(count: int, drop: Iterable[int]) -> list[int]:
    """The original indices of the layers kept when ``drop`` goes, checked.

    Example:
        >>> kept_after_drop(6, [5, 1])
        [0, 2, 3, 4]
        >>> kept_after_drop(2, [0, 1])
        Traceback (most recent call last):
        ...
        hubcompress.errors.ConfigListError: dropping layers [0, 1] leaves none of 2; keep at least one
    """
    drop = sorted(set(drop))
    outside = [i for i in drop if not 0 <= i < count]
    if outside:
        raise ConfigListError(f"layer indices {outside} are out of range: the model has {count} layers (0-{count - 1})")
    kept = [i for i in range(count) if i not in drop]
    if not kept:
        raise ConfigListError(f"dropping layers {drop} leaves none of {count}; keep at least one")
    return kept


def drop_layers(model: nn.Module, drop: Iterable[int]) -> list[int]:
    """Remove the layers at the original indices ``drop`` in place; returns the kept indices (the
    new layer ``j`` is the original layer ``kept[j]``)."""
    name, layers = layer_list(model)
    arch = architecture_for(model)
    kept = kept_after_drop(len(layers), drop)
    rule = DEPTH_RULES.get(model.config.model_type)
    refusal = rule(kept, len(layers)) if rule else None
    if refusal:
        raise ConfigListError(refusal)
    new = nn.ModuleList([layers[i] for i in kept])
    for index, layer in enumerate(new):
        for module in layer.modules():
            # What a stock model built with the new count holds: caches are indexed by it.
            for attribute in ("layer_idx", "layer_id"):
                if isinstance(getattr(module, attribute, None), int):
                    setattr(module, attribute, index)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
    setattr(model.config, arch.config_names.layers, len(kept))
    per_layer = getattr(model.config, "layer_types", None)
    if isinstance(per_layer, list) and len(per_layer) == len(layers):
        model.config.layer_types = [per_layer[i] for i in kept]
    return kept


def _hidden(value: Any) -> torch.Tensor:
    # Blocks return a tensor, a tuple led by it, or a ModelOutput.
    if isinstance(value, torch.Tensor):
        return value
    return value[0]


@torch.no_grad()
def block_influence(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> list[float]:
    """Each layer's block influence, ``1 - cos(input, output)`` of its hidden states averaged over
    the tokens the attention mask keeps (lower: the layer changes the stream less).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        ...                              intermediate_size=64, vocab_size=50)).eval()
        >>> batch = {"input_ids": torch.randint(0, 50, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
        >>> scores = block_influence(model, [batch])
        >>> len(scores), all(0 <= s <= 2 for s in scores)
        (3, True)
    """
    _, layers = layer_list(model)
    sums = [0.0] * len(layers)
    tokens = 0.0
    inputs: dict[int, torch.Tensor] = {}
    mask: dict[str, torch.Tensor] = {}

    def before(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            inputs[index] = args[0] if args else kwargs["hidden_states"]
        return hook

    def after(index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x, y = inputs.pop(index), _hidden(output)
            cos = nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            keep = mask["m"].to(cos.dtype) if "m" in mask and mask["m"].shape == cos.shape else torch.ones_like(cos)
            sums[index] += float(((1 - cos) * keep).sum())
        return hook

    handles = [h for i, layer in enumerate(layers) for h in (
        layer.register_forward_pre_hook(before(i), with_kwargs=True), layer.register_forward_hook(after(i)))]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            attention = batch.get("attention_mask")
            if attention is not None:
                mask["m"] = attention
            tokens += float(attention.sum()) if attention is not None else float(batch["input_ids"].numel())
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not tokens:
        raise ConfigListError("block influence needs at least one batch of text")
    return [s / tokens for s in sums]


def least_important(scores: list[float], count: int) -> list[int]:
    """The ``count`` layers with the lowest scores, in layer order (ties: the later layer goes).

    Example:
        >>> least_important([0.3, 0.05, 0.2, 0.05], 2)
        [1, 3]
    """
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))
    return sorted(order[:count])


def distillation_links(kept: list[int], count: int) -> list[int]:
    """For each kept layer, the teacher layer whose output it stands in for: the last original layer
    before the next kept one (what the next kept layer used to read), so the student's last layer
    always learns the teacher's last output.

    Example:
        >>> distillation_links([0, 2, 3], 6)
        [1, 2, 5]
    """
    return [(kept[j + 1] if j + 1 < len(kept) else count) - 1 for j in range(len(kept))]


def teacher_counterparts(layers: str, kept: list[int], count: int) -> Callable[[str, str], str]:
    """Where a module of a student that kept only the original layers ``kept`` of ``count`` (in the
    layer list at path ``layers``) finds its counterpart in the original, for a distillation target:
    a kept layer's output stands in for its teacher layer in :func:`distillation_links`; its input,
    and any module inside it, are its own original layer's; modules outside the layers keep their
    names.

    Example:
        >>> find = teacher_counterparts("encoder.layer", [0, 2, 3], 6)
        >>> find("encoder.layer.2", "_output_"), find("encoder.layer.2", "_input_")
        ('encoder.layer.5', 'encoder.layer.3')
        >>> find("encoder.layer.1.attention.output", "_output_"), find("pooler", "_output_")
        ('encoder.layer.2.attention.output', 'pooler')
    """
    stands_in = distillation_links(kept, count)

    def find(module_name: str, target_name: str) -> str:
        if not module_name.startswith(layers + "."):
            return module_name
        index, _, rest = module_name[len(layers) + 1:].partition(".")
        if not index.isdigit() or int(index) >= len(kept):
            return module_name
        j = int(index)
        if not rest and target_name.startswith("_output"):
            return f"{layers}.{stands_in[j]}"
        return f"{layers}.{kept[j]}" + (f".{rest}" if rest else "")
    return find
