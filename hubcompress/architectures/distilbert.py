"""DistilBERT: six layers, its own attribute names (``n_heads``, ``dim``, ``hidden_dim``)."""

from __future__ import annotations

from torch import nn

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

NAMES = ConfigNames("n_heads", "dim", "hidden_dim", "n_layers")


def _layout(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = heads_and_head_dim(model.config, NAMES)
    blocks = [BlockLayout(p, f"{p}.attention.q_lin", f"{p}.attention.k_lin", f"{p}.attention.v_lin", None,
                          f"{p}.attention.out_lin", f"{p}.ffn.lin1", f"{p}.ffn.lin2",
                          [f"{p}.sa_layer_norm", f"{p}.output_layer_norm"])
              for p in layers_matching(modules, r"(.*\.)?transformer\.layer\.\d+")]
    embeddings = suffixed(modules, ["embeddings.word_embeddings", "embeddings.position_embeddings"])
    return ModelLayout(heads, head_dim, blocks, embeddings, suffixed(modules, ["embeddings.LayerNorm"]),
                       suffixed(modules, ["pre_classifier", "vocab_transform", "qa_outputs"]))


def _fix_attention(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("q_lin", "k_lin", "v_lin")}
    m.n_heads = whole_heads(name, widths, m.attention_head_size)
    m.dim = m.n_heads * m.attention_head_size


DISTILBERT = register_architecture(Architecture(("distilbert",), _layout, NAMES,
                                                {"DistilBertSelfAttention": _fix_attention}))
