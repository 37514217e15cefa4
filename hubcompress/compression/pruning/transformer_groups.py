"""Config lists for transformer models whose groups keep the structure prunable as a whole:
whole attention heads (Q, K, V and the output projection's input in one dependency group),
whole FFN neurons, and one residual-stream width shared by every layer that reads or writes it.

NNI let Q, K and V be pruned independently, which can remove every head of a layer or leave
heads that no output projection reads; here each layer's head group yields one mask per head.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=50))
    >>> cfg = transformer_config_list(model, heads=0.5, ffn=0.25)
    >>> sorted({c["dependency_group_id"] for c in cfg})
    ['encoder.layer.0.ffn', 'encoder.layer.0.heads']
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...architectures import ModelLayout, model_layout
from ...errors import ConfigListError


def transformer_config_list(model: nn.Module, *, heads: float | None = None, ffn: float | None = None,
                            hidden: float | None = None, global_heads: bool = False,
                            global_ffn: bool = False) -> list[dict[str, Any]]:
    """A config list pruning attention heads, FFN neurons and/or the hidden width at these
    ratios. Each layer's heads (and FFN) form one dependency group; with ``global_heads`` the
    layers compete for one overall ratio instead of each losing the same share."""
    layout = model_layout(model)
    hd = layout.head_dim
    cfg: list[dict[str, Any]] = []
    for b in layout.blocks:
        if heads:
            group = {"dependency_group_id": f"{b.prefix}.heads", "sparse_ratio": heads}
            if global_heads:
                group["global_group_id"] = "heads"
            if b.qkv:  # [in, 3 * hidden]: Q, K and V sections of the same heads, folded
                cfg.append({"op_names": [b.qkv], "target_names": ["weight", "bias"],
                            "target_settings": {"weight": {"granularity": [-1, hd], "internal_metric_block": 3}},
                            **group})
                cfg.append({"op_names": [b.out], "target_names": ["weight"], "granularity": [hd, -1], **group})
            else:
                cfg.append({"op_names": [b.q, b.k, b.v], "target_names": ["weight", "bias"],
                            "target_settings": {"weight": {"granularity": [hd, -1]}}, **group})
                cfg.append({"op_names": [b.out], "target_names": ["weight"], "granularity": [-1, hd], **group})
        if ffn:
            group = {"dependency_group_id": f"{b.prefix}.ffn", "sparse_ratio": ffn}
            if global_ffn:
                group["global_group_id"] = "ffn"
            cfg.append({"op_names": [b.ffn_in], "target_names": ["weight", "bias"],
                        "target_settings": {"weight": {"granularity": "out_channel"}}, **group})
            cfg.append({"op_names": [b.ffn_out], "target_names": ["weight"], "granularity": "in_channel", **group})
    if hidden:
        if not layout.hidden_supported:
            raise ConfigListError(f"hidden-width pruning is not offered for {model.config.model_type}; prune heads "
                                  "and FFN, or write the hidden group's config list by hand.")
        cfg += _hidden_configs(layout, hidden, dict(model.named_modules()))
    if not cfg:
        raise ConfigListError("transformer_config_list: give at least one of heads, ffn, hidden.")
    return cfg


def _hidden_configs(layout: ModelLayout, ratio: float, modules: dict[str, nn.Module]) -> list[dict[str, Any]]:
    # The projections writing the stream already have their weight in a head / FFN group
    # (pruned along the other dim), so the stream is masked on their outputs and on the inputs
    # of the projections reading it; embeddings and norms carry the measured weights.
    group = {"dependency_group_id": "hidden", "sparse_ratio": ratio}
    writers = [n for b in layout.blocks for n in (b.out, b.ffn_out)]
    norms = layout.norms + [n for b in layout.blocks for n in b.norms]
    readers = [n for b in layout.blocks for n in ([b.qkv] if b.qkv else [b.q, b.k, b.v]) + [b.ffn_in]]
    readers += layout.readers
    configs = [
        {"op_names": norms, "target_names": ["weight", "bias"], **group},
        {"op_names": writers, "target_names": ["_output_"], "granularity": "per_channel", **group},
        {"op_names": readers, "target_names": ["_input_"], "granularity": "per_channel", **group},
    ]
    lookups = [n for n in layout.embeddings if isinstance(modules[n], nn.Embedding)]
    projections = [n for n in layout.embeddings if n not in lookups]  # ELECTRA's embeddings_project
    if lookups:
        configs.insert(0, {"op_names": lookups, "target_names": ["weight"], "granularity": "out_channel", **group})
    if projections:
        configs.insert(0, {"op_names": projections, "target_names": ["weight", "bias"],
                           "target_settings": {"weight": {"granularity": "out_channel"}}, **group})
    return configs
