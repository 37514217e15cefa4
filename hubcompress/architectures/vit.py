"""ViT: heads and FFN; hidden-width pruning is not offered (the CLS token and the position
embeddings are raw parameters of ``ViTEmbeddings``, outside any registered module template)."""

from __future__ import annotations

from torch import nn

from .base import (
    BERT_NAMES,
    Architecture,
    BlockLayout,
    ModelLayout,
    heads_and_head_dim,
    layers_matching,
    register_architecture,
    whole_heads,
)


def _layout(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = heads_and_head_dim(model.config, BERT_NAMES)
    blocks = [BlockLayout(p, f"{p}.attention.q_proj", f"{p}.attention.k_proj", f"{p}.attention.v_proj", None,
                          f"{p}.attention.o_proj", f"{p}.mlp.fc1", f"{p}.mlp.fc2",
                          [f"{p}.layernorm_before", f"{p}.layernorm_after"])
              for p in layers_matching(modules, r"(.*\.)?layers\.\d+")]
    return ModelLayout(heads, head_dim, blocks, [], [], [], hidden_supported=False)


def _fix_attention(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("q_proj", "k_proj", "v_proj")}
    m.num_attention_heads = whole_heads(name, widths, m.head_dim)


VIT = register_architecture(Architecture(("vit",), _layout, BERT_NAMES, {"ViTAttention": _fix_attention}))
