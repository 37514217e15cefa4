"""What the project knows about one transformer architecture, in one registry entry keyed by
``config.model_type``: where its blocks, heads and FFN live (the pruning layout), how an attention
block's own attributes follow its projections after speedup, and which config keys name its sizes.

Adding an architecture is one file in this package that calls :func:`register_architecture`
(Optimum's per-architecture ``OnnxConfig`` is the model; the ONNX side lives in the leaf package
``exporters``, keyed by the same ``model_type``).

Example:
    >>> from transformers import BertConfig, BertModel
    >>> from hubcompress.architectures import architecture_for
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=50))
    >>> arch = architecture_for(model)
    >>> arch.config_names.intermediate, len(arch.layout(model).blocks)
    ('intermediate_size', 1)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ConfigListError, ReplacementError


@dataclass
class BlockLayout:
    """The modules of one transformer layer, by their names in the model."""

    prefix: str
    q: str | None
    k: str | None
    v: str | None
    qkv: str | None  # a fused Q/K/V projection (GPT-2's c_attn)
    out: str
    ffn_in: str
    ffn_out: str
    norms: list[str]
    # further projections whose output rows are this block's heads, in Q's layout (DeBERTa's
    # pos_key_proj / pos_query_proj, which project the relative-position embeddings)
    head_projections: list[str] = field(default_factory=list)
    # equal sections of ffn_in's output, each one row per FFN neuron: 2 for a GLU (ModernBERT's Wi
    # holds the input half, then the gate half)
    ffn_parts: int = 1


@dataclass
class ModelLayout:
    num_heads: int
    head_dim: int
    blocks: list[BlockLayout]
    embeddings: list[str] = field(default_factory=list)  # modules writing the residual stream first
    norms: list[str] = field(default_factory=list)  # stand-alone norms on the stream
    readers: list[str] = field(default_factory=list)  # heads that read the stream (pooler, lm_head)
    hidden_supported: bool = True
    # why hidden-width pruning is refused (the ConfigListError says it); empty: the generic refusal
    hidden_refusal: str = ""
    # modules with one weight column per head, read by every layer (MPNet's relative_attention_bias):
    # every layer keeps the same heads, and these lose the columns of the removed ones
    shared_heads: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ConfigNames:
    """The config keys that hold an architecture's sizes (they differ: ``n_head``, ``dim``, ...)."""

    heads: str
    hidden: str
    intermediate: str
    layers: str


# ``fn(attention_module, module_name)``: update a block's attributes after its projections shrank.
BlockFixer = Callable[[nn.Module, str], None]
LayoutFn = Callable[[nn.Module, dict[str, nn.Module]], ModelLayout]


@dataclass(frozen=True)
class Architecture:
    """One registry entry: everything hubcompress knows about an architecture.

    Args:
        model_types: the ``config.model_type`` values it covers.
        layout: ``fn(model, named_modules) -> ModelLayout``.
        config_names: the config keys of head count, hidden width, FFN width and layer count.
        block_fixers: attention class name -> fixer, run by speedup (and recorded in the checkpoint).
    """

    model_types: tuple[str, ...]
    layout_fn: LayoutFn
    config_names: ConfigNames
    block_fixers: dict[str, BlockFixer] = field(default_factory=dict)

    def layout(self, model: nn.Module) -> ModelLayout:
        layout = self.layout_fn(model, dict(model.named_modules()))
        if not layout.blocks:
            raise ConfigListError(f"found no transformer layers in this {self.model_types[0]} model.")
        return layout

    def config_value(self, config: Any, key: str) -> Any:
        """``config``'s value for ``key`` (``"heads"``, ``"hidden"``, ``"intermediate"``, ``"layers"``)."""
        return getattr(config, getattr(self.config_names, key))


ARCHITECTURES: dict[str, Architecture] = {}
# Attention classes of every architecture, plus the ones users register for their own classes.
BLOCK_FIXERS: dict[str, BlockFixer] = {}


def register_architecture(arch: Architecture) -> Architecture:
    """Add an architecture (its fixers join the speedup's block-fixer registry)."""
    for model_type in arch.model_types:
        ARCHITECTURES[model_type] = arch
    BLOCK_FIXERS.update(arch.block_fixers)
    return arch


def register_block_fixer(*class_names: str) -> Callable[[BlockFixer], BlockFixer]:
    """Register ``fn(module, module_name)`` that updates a block's attributes after its children shrank.

    Example:
        >>> @register_block_fixer("MyAttention")
        ... def _mine(module, name):
        ...     module.num_heads = module.q.out_features // module.head_dim
        >>> "MyAttention" in BLOCK_FIXERS
        True
    """
    def deco(fn: BlockFixer) -> BlockFixer:
        for name in class_names:
            BLOCK_FIXERS[name] = fn
        return fn
    return deco


def architecture_for(model_or_type: nn.Module | str) -> Architecture:
    """The registered architecture of a transformers model (or of a ``model_type`` string).

    Raises:
        ConfigListError: nothing is registered for it; the message lists what is.
    """
    model_type = model_or_type if isinstance(model_or_type, str) else \
        getattr(getattr(model_or_type, "config", None), "model_type", None)
    arch = ARCHITECTURES.get(model_type)  # type: ignore[arg-type]
    if arch is None:
        raise ConfigListError(
            f"no architecture entry for model_type {model_type!r} (known: {sorted(ARCHITECTURES)}); add one with "
            "hubcompress.architectures.register_architecture (or @register_layout('<model_type>') for a layout "
            "alone), or write the config list by hand.")
    return arch


def model_layout(model: nn.Module) -> ModelLayout:
    """The registered layout of a transformers model (by ``model.config.model_type``)."""
    return architecture_for(model).layout(model)


def register_layout(*model_types: str) -> Callable[[LayoutFn], LayoutFn]:
    """Register a layout function ``(model, modules) -> ModelLayout`` for these ``config.model_type``s
    (an architecture with a layout alone; its config names are read as BERT's)."""
    def deco(fn: LayoutFn) -> LayoutFn:
        register_architecture(Architecture(tuple(model_types), fn, BERT_NAMES))
        return fn
    return deco


BERT_NAMES = ConfigNames("num_attention_heads", "hidden_size", "intermediate_size", "num_hidden_layers")


# --- helpers for the per-architecture files ----------------------------------------------------
def layers_matching(modules: dict[str, nn.Module], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [n for n in modules if regex.fullmatch(n)]


def suffixed(modules: dict[str, nn.Module], suffixes: list[str]) -> list[str]:
    return [n for n in modules if any(n == s or n.endswith("." + s) for s in suffixes)]


def heads_and_head_dim(config: Any, names: ConfigNames) -> tuple[int, int]:
    heads = getattr(config, names.heads)
    return heads, getattr(config, names.hidden) // heads


def whole_heads(name: str, widths: dict[str, int], head_dim: int) -> int:
    """The head count that projections of these widths hold; an error unless they agree on whole heads."""
    if len(set(widths.values())) != 1:
        raise ReplacementError(f"{name}: Q, K and V keep different widths {widths}; prune whole heads in one "
                               "dependency group (transformer_config_list does).")
    width = next(iter(widths.values()))
    if width % head_dim:
        raise ReplacementError(f"{name}: {width} kept channels are not whole heads of {head_dim}; prune heads with "
                               f"granularity [{head_dim}, -1] on Q/K/V.")
    return width // head_dim


def out_width(module: nn.Module) -> int:
    """Output width of a projection (transformers' ``Conv1D`` stores its weight as [in, out])."""
    weight = module.weight
    return weight.shape[1] if type(module).__name__ == "Conv1D" else weight.shape[0]


def layer_widths(model: nn.Module) -> list[dict[str, int]]:
    """Attention heads and FFN width of each transformer layer, read from the module shapes.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> layer_widths(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                                   intermediate_size=64, vocab_size=50)))
        [{'layer': 0, 'heads': 4, 'ffn': 64}]
    """
    layout = model_layout(model)
    modules = dict(model.named_modules())
    rows = []
    for index, block in enumerate(layout.blocks):
        q_out = out_width(modules[block.q]) if block.q is not None else out_width(modules[block.qkv]) // 3
        ffn = out_width(modules[block.ffn_in]) // block.ffn_parts
        rows.append({"layer": index, "heads": q_out // layout.head_dim, "ffn": ffn})
    return rows
