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

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ...errors import ConfigListError


@dataclass
class BlockLayout:
    prefix: str
    q: str | None
    k: str | None
    v: str | None
    qkv: str | None  # a fused Q/K/V projection (GPT-2's c_attn)
    out: str
    ffn_in: str
    ffn_out: str
    norms: list[str]


@dataclass
class ModelLayout:
    num_heads: int
    head_dim: int
    blocks: list[BlockLayout]
    embeddings: list[str] = field(default_factory=list)  # modules writing the residual stream first
    norms: list[str] = field(default_factory=list)  # stand-alone norms on the stream
    readers: list[str] = field(default_factory=list)  # heads that read the stream (pooler, lm_head)
    hidden_supported: bool = True


LAYOUTS: dict[str, Callable[[nn.Module, dict[str, nn.Module]], ModelLayout]] = {}


def register_layout(*model_types: str) -> Callable:
    """Register a function ``(model, modules) -> ModelLayout`` for these ``config.model_type``s."""
    def deco(fn: Callable) -> Callable:
        for t in model_types:
            LAYOUTS[t] = fn
        return fn
    return deco


def _layers(modules: dict[str, nn.Module], pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [n for n in modules if regex.fullmatch(n)]


def _suffixed(modules: dict[str, nn.Module], suffixes: list[str]) -> list[str]:
    return [n for n in modules if any(n == s or n.endswith("." + s) for s in suffixes)]


def _heads(config: Any) -> tuple[int, int]:
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or config.n_embd
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or config.n_head
    return heads, hidden // heads


@register_layout("bert", "roberta", "electra")
def _bert_like(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = _heads(model.config)
    blocks = []
    for p in _layers(modules, r"(.*\.)?encoder\.layer\.\d+"):
        att = f"{p}.attention.self"
        norms = [f"{p}.attention.output.LayerNorm", f"{p}.output.LayerNorm"]
        blocks.append(BlockLayout(p, f"{att}.query", f"{att}.key", f"{att}.value", None,
                                  f"{p}.attention.output.dense", f"{p}.intermediate.dense", f"{p}.output.dense", norms))
    project = _suffixed(modules, ["embeddings_project"])  # ELECTRA with a narrower embedding
    embeddings = project or _suffixed(modules, ["embeddings.word_embeddings", "embeddings.position_embeddings",
                                                "embeddings.token_type_embeddings"])
    norms = [] if project else _suffixed(modules, ["embeddings.LayerNorm"])
    readers = _suffixed(modules, ["pooler.dense", "classifier.dense", "lm_head.dense", "generator_predictions.dense",
                                  "discriminator_predictions.dense"])
    return ModelLayout(heads, head_dim, blocks, embeddings, norms, readers)


@register_layout("vit")
def _vit(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    # Hidden-width pruning is not offered: ViT's CLS token and position embeddings are raw
    # parameters of ViTEmbeddings, outside any registered module template.
    heads, head_dim = _heads(model.config)
    blocks = [BlockLayout(p, f"{p}.attention.q_proj", f"{p}.attention.k_proj", f"{p}.attention.v_proj", None,
                          f"{p}.attention.o_proj", f"{p}.mlp.fc1", f"{p}.mlp.fc2",
                          [f"{p}.layernorm_before", f"{p}.layernorm_after"])
              for p in _layers(modules, r"(.*\.)?layers\.\d+")]
    return ModelLayout(heads, head_dim, blocks, [], [], [], hidden_supported=False)


@register_layout("distilbert")
def _distilbert(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = _heads(model.config)
    blocks = [BlockLayout(p, f"{p}.attention.q_lin", f"{p}.attention.k_lin", f"{p}.attention.v_lin", None,
                          f"{p}.attention.out_lin", f"{p}.ffn.lin1", f"{p}.ffn.lin2",
                          [f"{p}.sa_layer_norm", f"{p}.output_layer_norm"])
              for p in _layers(modules, r"(.*\.)?transformer\.layer\.\d+")]
    embeddings = _suffixed(modules, ["embeddings.word_embeddings", "embeddings.position_embeddings"])
    return ModelLayout(heads, head_dim, blocks, embeddings, _suffixed(modules, ["embeddings.LayerNorm"]),
                       _suffixed(modules, ["pre_classifier", "vocab_transform", "qa_outputs"]))


@register_layout("gpt2")
def _gpt2(model: nn.Module, modules: dict[str, nn.Module]) -> ModelLayout:
    heads, head_dim = _heads(model.config)
    blocks = [BlockLayout(p, None, None, None, f"{p}.attn.c_attn", f"{p}.attn.c_proj", f"{p}.mlp.c_fc",
                          f"{p}.mlp.c_proj", [f"{p}.ln_1", f"{p}.ln_2"])
              for p in _layers(modules, r"(.*\.)?h\.\d+")]
    return ModelLayout(heads, head_dim, blocks, _suffixed(modules, ["wte", "wpe"]), _suffixed(modules, ["ln_f"]),
                       _suffixed(modules, ["lm_head", "score"]))


def model_layout(model: nn.Module) -> ModelLayout:
    """The registered layout of a transformers model (by ``model.config.model_type``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in LAYOUTS:
        raise ConfigListError(
            f"no transformer layout for model_type {model_type!r} (known: {sorted(LAYOUTS)}); register one with "
            "@register_layout('<model_type>') returning a ModelLayout, or write the config list by hand.")
    layout = LAYOUTS[model_type](model, dict(model.named_modules()))
    if not layout.blocks:
        raise ConfigListError(f"found no transformer layers in this {model_type} model.")
    return layout


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
