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

from ...architectures import BlockLayout, ModelLayout, model_layout
from ...errors import ConfigListError


def transformer_config_list(model: nn.Module, *, heads: float | None = None, ffn: float | None = None,
                            hidden: float | None = None, global_heads: bool = False,
                            global_ffn: bool = False) -> list[dict[str, Any]]:
    """A config list pruning attention heads, FFN neurons and/or the hidden width at these
    ratios. Each layer's heads (and FFN) form one dependency group; with ``global_heads`` the
    layers compete for one overall ratio instead of each losing the same share.

    Fused projections fold their sections onto one metric (``internal_metric_block``): GPT-2's and
    ModernBERT's Q/K/V in one matrix (3 sections of the same heads), a GLU's input and gate halves
    (2 sections of the same neurons). Where the architecture ties every layer's heads together
    (MPNet's relative attention bias), all layers form one head group and keep the same heads."""
    layout = model_layout(model)
    modules = dict(model.named_modules())
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    if heads and global_heads and layout.shared_heads:
        raise ConfigListError(
            f"{model_type}: {', '.join(layout.shared_heads)} holds one column per head read by every layer, so all "
            "layers keep the same heads and cannot compete for them; prune heads without global_heads.")
    cfg: list[dict[str, Any]] = []
    for b in layout.blocks:
        if heads:
            gid = "heads" if layout.shared_heads else f"{b.prefix}.heads"
            group = {"dependency_group_id": gid, "sparse_ratio": heads}
            if global_heads:
                group["global_group_id"] = "heads"
            cfg += _head_configs(b, layout.head_dim, modules, group)
        if ffn:
            group = {"dependency_group_id": f"{b.prefix}.ffn", "sparse_ratio": ffn}
            if global_ffn:
                group["global_group_id"] = "ffn"
            fold = {"internal_metric_block": b.ffn_parts} if b.ffn_parts > 1 else {}
            cfg += _weight_and_bias([b.ffn_in], modules, {"granularity": "out_channel", **fold}, group)
            cfg.append({"op_names": [b.ffn_out], "target_names": ["weight"], "granularity": "in_channel", **group})
    if heads and layout.shared_heads:  # [rows, heads]: one column per head
        cfg.append({"op_names": list(layout.shared_heads), "target_names": ["weight"], "granularity": [-1, 1],
                    "dependency_group_id": "heads", "sparse_ratio": heads})
    if hidden:
        if not layout.hidden_supported:
            why = layout.hidden_refusal or f"hidden-width pruning is not offered for {model_type}"
            raise ConfigListError(f"{why}; prune heads and FFN, or write the hidden group's config list by hand.")
        cfg += _hidden_configs(layout, hidden, modules)
    if not cfg:
        raise ConfigListError("transformer_config_list: give at least one of heads, ffn, hidden.")
    return cfg


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers' [in, out] projection


def _weight_and_bias(names: list[str], modules: dict[str, nn.Module], weight_setting: dict[str, Any],
                     group: dict[str, Any]) -> list[dict[str, Any]]:
    """Entries pruning these projections' weights (and their biases, which follow): projections
    without a bias (ModernBERT's, DeBERTa's embed_proj) get an entry of their own."""
    with_bias = [n for n in names if getattr(modules[n], "bias", None) is not None]
    without = [n for n in names if n not in with_bias]
    out = []
    for chosen, targets in ((with_bias, ["weight", "bias"]), (without, ["weight"])):
        if chosen:
            out.append({"op_names": chosen, "target_names": targets,
                        "target_settings": {"weight": dict(weight_setting)}, **group})
    return out


def _head_configs(b: BlockLayout, hd: int, modules: dict[str, nn.Module], group: dict[str, Any]) -> list[dict]:
    out_kernel = [hd, -1] if _is_conv1d(modules[b.out]) else [-1, hd]  # the output projection's input columns
    out = {"op_names": [b.out], "target_names": ["weight"], "granularity": out_kernel, **group}
    if b.qkv:  # Q, K and V sections of the same heads side by side, folded onto one metric
        kernel = [-1, hd] if _is_conv1d(modules[b.qkv]) else [hd, -1]
        return _weight_and_bias([b.qkv], modules, {"granularity": kernel, "internal_metric_block": 3}, group) + [out]
    projections = [b.q, b.k, b.v, *b.head_projections]
    return _weight_and_bias(projections, modules, {"granularity": [hd, -1]}, group) + [out]


def _hidden_configs(layout: ModelLayout, ratio: float, modules: dict[str, nn.Module]) -> list[dict[str, Any]]:
    # The projections writing the stream already have their weight in a head / FFN group
    # (pruned along the other dim), so the stream is masked on their outputs and on the inputs
    # of the projections reading it; embeddings and norms carry the measured weights.
    group = {"dependency_group_id": "hidden", "sparse_ratio": ratio}
    writers = [n for b in layout.blocks for n in (b.out, b.ffn_out)]
    norms = layout.norms + [n for b in layout.blocks for n in b.norms]
    readers = [n for b in layout.blocks for n in ([b.qkv] if b.qkv else [b.q, b.k, b.v]) + b.head_projections
               + [b.ffn_in]]
    readers += layout.readers
    norms_with_bias = [n for n in norms if getattr(modules[n], "bias", None) is not None]
    configs = [{"op_names": names, "target_names": targets, **group}
               for names, targets in ((norms_with_bias, ["weight", "bias"]),
                                      ([n for n in norms if n not in norms_with_bias], ["weight"])) if names]
    configs += [
        {"op_names": writers, "target_names": ["_output_"], "granularity": "per_channel", **group},
        {"op_names": readers, "target_names": ["_input_"], "granularity": "per_channel", **group},
    ]
    lookups = [n for n in layout.embeddings if isinstance(modules[n], nn.Embedding)]
    projections = [n for n in layout.embeddings if n not in lookups]  # ELECTRA's embeddings_project
    if lookups:
        configs.insert(0, {"op_names": lookups, "target_names": ["weight"], "granularity": "out_channel", **group})
    if projections:
        configs[:0] = _weight_and_bias(projections, modules, {"granularity": "out_channel"}, group)
    return configs
