"""MPNet (all-mpnet-base-v2): BERT-like blocks with one-letter projections (q, k, v, o), and one
relative-position bias table for the whole encoder.

``encoder.relative_attention_bias`` is an ``Embedding(buckets, heads)`` whose output is added to
the attention scores of *every* layer: head h of each layer reads column h. Heads pruned per
layer would leave each layer reading columns another layer dropped, so speedup could only keep
the union of every layer's heads (almost nothing at 12 layers); and the stock
``MPNetSelfAttention`` adds the whole table, so no per-layer selection can be written into a
checkpoint that loads without hubcompress. All layers therefore keep the same heads (one head
group for the encoder, the table's columns included), and the table loses the removed columns."""

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
    suffixed,
    whole_heads,
)


def _layout(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = heads_and_head_dim(model.config, BERT_NAMES)
    blocks = []
    for p in layers_matching(modules, r"(.*\.)?encoder\.layer\.\d+"):
        att = f"{p}.attention.attn"
        blocks.append(BlockLayout(p, f"{att}.q", f"{att}.k", f"{att}.v", None, f"{att}.o", f"{p}.intermediate.dense",
                                  f"{p}.output.dense", [f"{p}.attention.LayerNorm", f"{p}.output.LayerNorm"]))
    embeddings = suffixed(modules, ["embeddings.word_embeddings", "embeddings.position_embeddings"])
    readers = suffixed(modules, ["pooler.dense", "classifier.dense", "lm_head.dense"])
    return ModelLayout(heads, head_dim, blocks, embeddings, suffixed(modules, ["embeddings.LayerNorm"]), readers,
                       shared_heads=suffixed(modules, ["encoder.relative_attention_bias"]))


def _fix_attention(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("q", "k", "v")}
    m.num_attention_heads = whole_heads(name, widths, m.attention_head_size)
    m.all_head_size = m.num_attention_heads * m.attention_head_size


MPNET = register_architecture(Architecture(("mpnet",), _layout, BERT_NAMES, {"MPNetSelfAttention": _fix_attention}))
