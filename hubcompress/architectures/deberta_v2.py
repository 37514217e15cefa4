"""DeBERTa-v2 and -v3: disentangled attention.

Each layer's ``query_proj`` / ``key_proj`` / ``value_proj`` hold its heads; with relative attention
the encoder's relative-position embeddings (``encoder.rel_embeddings``, normalised by
``encoder.LayerNorm``) are projected per layer into position keys and queries of the *same* heads:
by ``pos_key_proj`` / ``pos_query_proj`` (v2, ``share_att_key=False``) or by ``key_proj`` /
``query_proj`` themselves (v3, ``share_att_key=True``). So a head's dependency group is Q, K, V,
the position projections when there are any, and the output projection's input columns.

The relative embeddings are as wide as the residual stream and read by the same projections, so a
narrower hidden width narrows them too (they join the hidden group like the word embeddings).
Hidden-width pruning is refused where the model has the convolution layer of DeBERTa-v2-xlarge
(``conv_kernel_size > 0``): it writes every channel of the stream, the removed ones included.
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

_POSITION_PROJECTIONS = ("pos_key_proj", "pos_query_proj")


def _layout(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = heads_and_head_dim(model.config, BERT_NAMES)
    head_dim = getattr(model.config, "attention_head_size", None) or head_dim
    blocks = []
    for p in layers_matching(modules, r"(.*\.)?encoder\.layer\.\d+"):
        att = f"{p}.attention.self"
        extra = [f"{att}.{n}" for n in _POSITION_PROJECTIONS if f"{att}.{n}" in modules]
        blocks.append(BlockLayout(p, f"{att}.query_proj", f"{att}.key_proj", f"{att}.value_proj", None,
                                  f"{p}.attention.output.dense", f"{p}.intermediate.dense", f"{p}.output.dense",
                                  [f"{p}.attention.output.LayerNorm", f"{p}.output.LayerNorm"], extra))
    project = suffixed(modules, ["embeddings.embed_proj"])  # embedding_size != hidden_size
    lookups = suffixed(modules, ["embeddings.word_embeddings", "embeddings.position_embeddings",
                                 "embeddings.token_type_embeddings"])
    # the stream starts at embed_proj when there is one; the embeddings' LayerNorm follows it either way
    embeddings = (project or lookups) + suffixed(modules, ["encoder.rel_embeddings"])
    norms = suffixed(modules, ["embeddings.LayerNorm", "encoder.LayerNorm"])
    readers = suffixed(modules, ["pooler.dense", "lm_predictions.lm_head.dense", "cls.predictions.transform.dense"])
    convolved = bool(suffixed(modules, ["encoder.conv.conv"]))
    refusal = ("hidden-width pruning is not offered for DeBERTa-v2 with conv_kernel_size > 0: its encoder.conv "
               "writes every channel of the residual stream, the removed ones included") if convolved else ""
    return ModelLayout(heads, head_dim, blocks, embeddings, norms, readers, hidden_supported=not convolved,
                       hidden_refusal=refusal)


def _fix_attention(m: nn.Module, name: str) -> None:
    projections = ("query_proj", "key_proj", "value_proj") + tuple(p for p in _POSITION_PROJECTIONS if hasattr(m, p))
    widths = {p: getattr(m, p).out_features for p in projections}
    m.num_attention_heads = whole_heads(name, widths, m.attention_head_size)
    m.all_head_size = m.num_attention_heads * m.attention_head_size


DEBERTA_V2 = register_architecture(Architecture(("deberta-v2",), _layout, BERT_NAMES,
                                                {"DisentangledSelfAttention": _fix_attention}))
