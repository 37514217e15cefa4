"""After the projections of an attention block shrink, the block's own attributes (head count,
all-head size, split size) must follow, or a later reshape breaks — the most reported failure of
every pruning tool. One fixer per attention class, found by class name."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ReplacementError

BLOCK_FIXERS: dict[str, Callable[[nn.Module, str], None]] = {}


def register_block_fixer(*class_names: str) -> Callable:
    """Register ``fn(module, module_name)`` that updates a block's attributes after its children shrank."""
    def deco(fn: Callable) -> Callable:
        for name in class_names:
            BLOCK_FIXERS[name] = fn
        return fn
    return deco


def _heads(name: str, widths: dict[str, int], head_dim: int) -> int:
    if len(set(widths.values())) != 1:
        raise ReplacementError(f"{name}: Q, K and V keep different widths {widths}; prune whole heads in one "
                               "dependency group (transformer_config_list does).")
    width = next(iter(widths.values()))
    if width % head_dim:
        raise ReplacementError(f"{name}: {width} kept channels are not whole heads of {head_dim}; prune heads with "
                               f"granularity [{head_dim}, -1] on Q/K/V.")
    return width // head_dim


@register_block_fixer("BertSelfAttention", "RobertaSelfAttention", "ElectraSelfAttention")
def _bert(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("query", "key", "value")}
    m.num_attention_heads = _heads(name, widths, m.attention_head_size)
    m.all_head_size = m.num_attention_heads * m.attention_head_size


@register_block_fixer("ViTAttention")
def _vit(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("q_proj", "k_proj", "v_proj")}
    m.num_attention_heads = _heads(name, widths, m.head_dim)


@register_block_fixer("DistilBertSelfAttention")
def _distilbert(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("q_lin", "k_lin", "v_lin")}
    m.n_heads = _heads(name, widths, m.attention_head_size)
    m.dim = m.n_heads * m.attention_head_size


@register_block_fixer("GPT2Attention")
def _gpt2(m: nn.Module, name: str) -> None:
    if getattr(m, "is_cross_attention", False):
        raise ReplacementError(f"{name}: GPT-2 cross-attention pruning is not supported.")
    total = m.c_attn.weight.shape[1]
    if total % 3:
        raise ReplacementError(f"{name}: c_attn keeps {total} columns, not three equal Q/K/V parts.")
    m.num_heads = _heads(name, {"qkv/3": total // 3, "c_proj in": m.c_proj.weight.shape[0]}, m.head_dim)
    m.split_size = m.num_heads * m.head_dim
