"""BERT and the encoders built like it: RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA."""

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
        att = f"{p}.attention.self"
        norms = [f"{p}.attention.output.LayerNorm", f"{p}.output.LayerNorm"]
        blocks.append(BlockLayout(p, f"{att}.query", f"{att}.key", f"{att}.value", None,
                                  f"{p}.attention.output.dense", f"{p}.intermediate.dense", f"{p}.output.dense", norms))
    project = suffixed(modules, ["embeddings_project"])  # ELECTRA with a narrower embedding
    embeddings = project or suffixed(modules, ["embeddings.word_embeddings", "embeddings.position_embeddings",
                                               "embeddings.token_type_embeddings"])
    norms = [] if project else suffixed(modules, ["embeddings.LayerNorm"])
    readers = suffixed(modules, ["pooler.dense", "classifier.dense", "lm_head.dense", "generator_predictions.dense",
                                 "discriminator_predictions.dense"])
    return ModelLayout(heads, head_dim, blocks, embeddings, norms, readers)


def _fix_attention(m: nn.Module, name: str) -> None:
    widths = {p: getattr(m, p).out_features for p in ("query", "key", "value")}
    m.num_attention_heads = whole_heads(name, widths, m.attention_head_size)
    m.all_head_size = m.num_attention_heads * m.attention_head_size


BERT = register_architecture(Architecture(
    ("bert", "roberta", "xlm-roberta", "camembert", "electra"), _layout, BERT_NAMES,
    {cls: _fix_attention for cls in ("BertSelfAttention", "RobertaSelfAttention", "XLMRobertaSelfAttention",
                                     "CamembertSelfAttention", "ElectraSelfAttention")}))
