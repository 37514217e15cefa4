"""Liveness and coupling rules for the ops of relative-position and fused attention: DeBERTa's
position keys repeated over the batch and gathered by relative distance, its ``masked_fill`` of the
scores, a ``zeros_like`` standing in for absent position embeddings, and ModernBERT's fused Q/K/V
split by ``unbind``.

Without them each of these ops pins every dim it touches (never wrong, but a pinned score tensor
keeps every head). Each rule is small and found by registry, like the built-in ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from .coupling import GETITEM_RULES, Coupler, register_mask_updater
from .liveness_rules import _bin, register_liveness_rule

aten = torch.ops.aten


# --- repeat: x tiled r_d times along each dim (DeBERTa's position keys, once per batch row) -----------
register_liveness_rule(aten.repeat.default, aten.repeat.default)  # on 0/1 masks the op itself; VJP sums tiles


@register_mask_updater(aten.repeat.default)
def _repeat(node: fx.Node, c: Coupler) -> None:
    """Output index ``i * n + j`` of a dim repeated r times is input index ``j``: an index is kept in
    every tile or in none, and the input keeps what any tile keeps."""
    x, repeats = node.args[0], list(node.args[1])
    if not (c.tracked(x) and c.tracked(node)):
        return
    nx = len(c.shapes[x.name])
    lead = len(c.shapes[node.name]) - nx
    if lead:
        c.pin(node, "new dims of a repeat", list(range(lead)))
    for d in range(nx):
        times = repeats[lead + d]
        if times == 1:
            c.tie(x, d, node, lead + d)
            continue
        x_ref, out_ref = (x.name, d), (node.name, lead + d)

        def run(x_ref: tuple[str, int] = x_ref, out_ref: tuple[str, int] = out_ref, times: int = times) -> bool:
            merged = c._get(x_ref) | c._get(out_ref).reshape(times, -1).any(0)
            return c._union(x_ref, merged) | c._union(out_ref, merged.repeat(times))
        c.constraints.append(run)


# --- gather: positions picked along one dim by an index tensor (relative distances) ---------------------
@register_mask_updater(aten.gather.default)
def _gather(node: fx.Node, c: Coupler) -> None:
    """The index addresses positions along ``dim``, so that dim stays whole on both sides; the other
    dims map one to one where the index spans them (it may span a prefix only: then they stay too)."""
    x, dim = node.args[0], node.args[1]
    if not (c.tracked(x) and c.tracked(node)):
        return
    nd = len(c.shapes[x.name])
    dim %= nd
    c.pin(x, "gathered along this dim", [dim])
    c.pin(node, "gathered along this dim", [dim])
    for d in range(nd):
        if d == dim:
            continue
        if c.shapes[x.name][d] == c.shapes[node.name][d]:
            c.tie(x, d, node, d)
        else:
            c.pin(x, "gathered over a prefix of this dim", [d])
            c.pin(node, "gathered over a prefix of this dim", [d])


# --- masked_fill: scores set to a constant where the attention mask says so -----------------------------
def _masked_fill_alive(x: Any, mask: Any, value: Any) -> torch.Tensor:
    filled = (value != 0) if isinstance(value, torch.Tensor) else torch.tensor(value != 0)
    return torch.where(torch.as_tensor(mask, dtype=torch.bool), filled.float(), _bin(torch.as_tensor(x)))


def _masked_fill_used(used: torch.Tensor, x: Any, mask: Any, value: Any) -> list:
    return [used, None, used if isinstance(value, torch.Tensor) else None]


for _op in (aten.masked_fill.Scalar, aten.masked_fill.Tensor):
    register_liveness_rule(_op, _masked_fill_alive, _masked_fill_used)


@register_mask_updater(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(node: fx.Node, c: Coupler) -> None:
    for arg in (node.args[0], node.args[2]):
        c.tie_right_aligned(arg, node)


# --- zeros_like: a constant of the input's shape (DeBERTa without absolute position embeddings) ---------
register_liveness_rule(aten.zeros_like.default, lambda x, *rest, **kw: torch.zeros_like(torch.as_tensor(x)),
                       lambda used, x, *rest, **kw: [None])


@register_mask_updater(aten.zeros_like.default)
def _zeros_like(node: fx.Node, c: Coupler) -> None:
    c.tie_right_aligned(node.args[0], node)  # same shape: shrinks along with its input


# --- unbind: a fused projection's [..., 3, heads, head_dim] view split into Q, K and V (ModernBERT) -----
def _unbind_alive(x: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, ...]:
    return torch.unbind(x, dim)


def _unbind_used(used: Any, x: torch.Tensor, dim: int = 0) -> list:
    return [torch.stack([torch.as_tensor(u).expand(x.select(dim, 0).shape) for u in used], dim)]


register_liveness_rule(aten.unbind.int, _unbind_alive, _unbind_used)


@register_mask_updater(aten.unbind.int)
def _unbind(node: fx.Node, c: Coupler) -> None:
    """Tied at its getitem users (below)."""


def _unbind_item(node: fx.Node, c: Coupler) -> None:
    src = node.args[0]
    x = src.args[0]
    if not (c.tracked(x) and c.tracked(node)):
        return
    nd = len(c.shapes[x.name])
    dim = (src.args[1] if len(src.args) > 1 else 0) % nd
    c.pin(x, "unbound along this dim", [dim])
    for d in range(nd):
        if d != dim:
            c.tie(x, d, node, d if d < dim else d - 1)


GETITEM_RULES[aten.unbind.int] = _unbind_item
