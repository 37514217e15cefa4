"""ALBERT: one layer group, its layers applied ``num_hidden_layers`` times, and narrow embeddings.

The module tree holds each *shared* layer once (``encoder.albert_layer_groups.G.albert_layers.I``),
so the layout lists those: pruning a shared layer's heads or FFN neurons prunes every application
of it, once, and the checkpoint keeps its sharing. The embeddings are ``embedding_size`` wide and
``encoder.embedding_hidden_mapping_in`` projects them onto the residual stream, so a narrower
hidden width starts at that projection (ELECTRA's ``embeddings_project`` likewise); the
embeddings and their LayerNorm keep their width.
"""

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
    for p in layers_matching(modules, r"(.*\.)?encoder\.albert_layer_groups\.\d+\.albert_layers\.\d+"):
        att = f"{p}.attention"
        blocks.append(BlockLayout(p, f"{att}.query", f"{att}.key", f"{att}.value", None, f"{att}.dense",
                                  f"{p}.ffn", f"{p}.ffn_output", [f"{att}.LayerNorm", f"{p}.full_layer_layer_norm"]))
    embeddings = suffixed(modules, ["encoder.embedding_hidden_mapping_in"])
    readers = [n for n in suffixed(modules, ["pooler", "predictions.dense"]) if isinstance(modules[n], nn.Linear)]
    return ModelLayout(heads, head_dim, blocks, embeddings, [], readers)


def _fix_attention(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("query", "key", "value")}
    m.num_attention_heads = whole_heads(name, widths, m.attention_head_size)
    m.all_head_size = m.num_attention_heads * m.attention_head_size


ALBERT = register_architecture(Architecture(("albert",), _layout, BERT_NAMES, {"AlbertAttention": _fix_attention}))
