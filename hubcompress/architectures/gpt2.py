"""GPT-2: a fused Q/K/V projection (``c_attn``) stored as transformers' ``Conv1D`` ([in, out])."""

from __future__ import annotations

from torch import nn

from ..errors import ReplacementError
from .base import (
    Architecture,
    BlockLayout,
    ConfigNames,
    ModelLayout,
    heads_and_head_dim,
    layers_matching,
    register_architecture,
    suffixed,
    whole_heads,
)

NAMES = ConfigNames("n_head", "n_embd", "n_inner", "n_layer")


def _layout(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = heads_and_head_dim(model.config, NAMES)
    blocks = [BlockLayout(p, None, None, None, f"{p}.attn.c_attn", f"{p}.attn.c_proj", f"{p}.mlp.c_fc",
                          f"{p}.mlp.c_proj", [f"{p}.ln_1", f"{p}.ln_2"])
              for p in layers_matching(modules, r"(.*\.)?h\.\d+")]
    return ModelLayout(heads, head_dim, blocks, suffixed(modules, ["wte", "wpe"]), suffixed(modules, ["ln_f"]),
                       suffixed(modules, ["lm_head", "score"]))


def _fix_attention(m: nn.Module, name: str) -> None:
    if getattr(m, "is_cross_attention", False):
        raise ReplacementError(f"{name}: GPT-2 cross-attention pruning is not supported.")
    total = m.c_attn.weight.shape[1]
    if total % 3:
        raise ReplacementError(f"{name}: c_attn keeps {total} columns, not three equal Q/K/V parts.")
    m.num_heads = whole_heads(name, {"qkv/3": total // 3, "c_proj in": m.c_proj.weight.shape[0]}, m.head_dim)
    m.split_size = m.num_heads * m.head_dim


GPT2 = register_architecture(Architecture(("gpt2",), _layout, NAMES, {"GPT2Attention": _fix_attention}))
