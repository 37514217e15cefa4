"""ModernBERT: a fused Q/K/V projection (``attn.Wqkv``, an ``nn.Linear`` whose output is viewed as
``[3, heads, head_dim]``), a GLU FFN (``mlp.Wi`` makes the input half then the gate half, each
``intermediate_size`` wide; ``mlp.Wo`` reads their product), rotary position embeddings, pre-norm
blocks (layer 0 has no attention norm) and alternating global / sliding-window attention.

A head is three row blocks of ``Wqkv`` (its Q, K and V sections, folded onto one metric as GPT-2's
``c_attn``) and a column block of ``attn.Wo``; an FFN neuron is two rows of ``Wi`` (input and gate)
and a column of ``Wo``. Rotary embeddings act within a head (its ``head_dim``), which pruning never
splits; the attention window is a mask over positions, untouched by any width.
"""

from __future__ import annotations

from torch import nn

from ..errors import ReplacementError
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
    for p in layers_matching(modules, r"(.*\.)?layers\.\d+"):
        if not hasattr(modules[p], "attn") or not hasattr(modules[p], "mlp"):
            continue
        norms = [n for n in (f"{p}.attn_norm", f"{p}.mlp_norm") if isinstance(modules.get(n), nn.LayerNorm)]
        blocks.append(BlockLayout(p, None, None, None, f"{p}.attn.Wqkv", f"{p}.attn.Wo", f"{p}.mlp.Wi",
                                  f"{p}.mlp.Wo", norms, ffn_parts=2))
    norms = suffixed(modules, ["embeddings.norm", "final_norm"])
    readers = suffixed(modules, ["head.dense"])  # the prediction head of the task models reads the stream
    return ModelLayout(heads, head_dim, blocks, suffixed(modules, ["embeddings.tok_embeddings"]), norms, readers)


def _fix_attention(m: nn.Module, name: str) -> None:
    # its forward reads the head count off Wqkv's width (a view with -1): check it holds whole heads
    rows = m.Wqkv.out_features
    if rows % 3:
        raise ReplacementError(f"{name}: Wqkv keeps {rows} rows, not three equal Q/K/V parts.")
    whole_heads(name, {"Wqkv/3": rows // 3, "Wo in": m.Wo.in_features}, m.head_dim)


MODERNBERT = register_architecture(Architecture(("modernbert",), _layout, BERT_NAMES,
                                                {"ModernBertAttention": _fix_attention}))
