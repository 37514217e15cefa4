"""Which indices of every tensor dimension survive: one keep vector per (node, dim), unified
across every op that ties dims together, until nothing changes.

Each rule ties the dims an op needs to agree after shrinking (both inputs of an add and its
output; a linear's input channels and its weight's columns; a head dim before and after a
view). Ties are unions: an index that one side keeps, every tied side keeps, so conflicts (a
residual add whose branches are masked differently, a weight shared by two layers) resolve by
keeping more, and the achieved sparsity is reported where it falls short of the masks. An op
without a rule pins every dim it touches: less pruning, never a wrong model. Rules are found by
registry: ``@register_mask_updater(aten.op)``.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any, Callable

import torch
from torch import fx

aten = torch.ops.aten
Ref = tuple[str, int]
MASK_UPDATERS: dict[Any, Callable[[fx.Node, "Coupler"], None]] = {}
# op of a tuple-returning node -> fn(getitem node, coupler): ties one element of its result
GETITEM_RULES: dict[Any, Callable[[fx.Node, "Coupler"], None]] = {}


def register_mask_updater(*ops: Any) -> Callable:
    """Register a coupling rule ``fn(node, coupler)`` for these aten ops (or getitem sources)."""
    def deco(fn: Callable) -> Callable:
        for op in ops:
            MASK_UPDATERS[op] = fn
        return fn
    return deco


class Coupler:
    """Keep vectors per (node, dim) and the constraints between them."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], keep: dict[Ref, torch.Tensor]):
        self.shapes = shapes
        self.keep = keep
        self.constraints: list[Callable[[], bool]] = []
        self.pinned_by: dict[str, str] = {}  # node -> op that pinned it (for reports)
        self.edges: list[tuple[Ref, Ref]] = []  # one-to-one ties, for dependency groups

    def tracked(self, node: Any) -> bool:
        return isinstance(node, fx.Node) and node.name in self.shapes

    def _get(self, ref: Ref) -> torch.Tensor:
        return self.keep[ref]

    def _union(self, ref: Ref, value: torch.Tensor) -> bool:
        old = self.keep[ref]
        new = old | value
        if torch.equal(new, old):
            return False
        self.keep[ref] = new
        return True

    # --- constraint builders ---------------------------------------------------------------------
    def tie(self, a: Any, da: int, b: Any, db: int) -> None:
        if not (self.tracked(a) and self.tracked(b)):
            return
        ra, rb = (a.name, da % len(self.shapes[a.name])), (b.name, db % len(self.shapes[b.name]))
        if self.shapes[a.name][ra[1]] != self.shapes[b.name][rb[1]]:
            if self.shapes[a.name][ra[1]] == 1 or self.shapes[b.name][rb[1]] == 1:
                return  # broadcast: nothing to tie
            self.pin(a, "size mismatch")
            self.pin(b, "size mismatch")
            return

        def run() -> bool:
            merged = self._get(ra) | self._get(rb)
            return self._union(ra, merged) | self._union(rb, merged)
        self.constraints.append(run)
        self.edges.append((ra, rb))

    def tie_right_aligned(self, a: Any, b: Any, skip: set[int] = frozenset()) -> None:
        """Tie dims aligned from the right (broadcasting), except dims of ``b`` in ``skip``."""
        if not (self.tracked(a) and self.tracked(b)):
            return
        na, nb = len(self.shapes[a.name]), len(self.shapes[b.name])
        for offset in range(1, min(na, nb) + 1):
            if (nb - offset) in skip:
                continue
            self.tie(a, na - offset, b, nb - offset)

    def pin(self, node: Any, why: str, dims: list[int] | None = None) -> None:
        if not self.tracked(node):
            return
        nd = len(self.shapes[node.name])
        for d in (range(nd) if dims is None else [x % nd for x in dims]):
            ref = (node.name, d)
            self.keep[ref] = torch.ones_like(self.keep[ref])
        self.pinned_by.setdefault(node.name, why)

    def tie_groups(self, a: Any, dims_a: list[int], b: Any, dims_b: list[int]) -> None:
        """The flattened product of ``dims_a`` of a equals that of ``dims_b`` of b (a view)."""
        if not (self.tracked(a) and self.tracked(b)):
            return
        if len(dims_a) == 1 and len(dims_b) == 1:
            self.tie(a, dims_a[0], b, dims_b[0])
            return
        refs_a = [(a.name, d) for d in dims_a]
        refs_b = [(b.name, d) for d in dims_b]

        def run() -> bool:
            full = _outer([self._get(r) for r in refs_a]) | _outer([self._get(r) for r in refs_b])
            changed = False
            for refs in (refs_a, refs_b):
                sizes = [self._get(r).numel() for r in refs]
                grid = full.reshape(sizes)
                for i, r in enumerate(refs):
                    others = [d for d in range(len(sizes)) if d != i]
                    changed |= self._union(r, grid.amax(dim=others) if others else grid)
            return changed
        self.constraints.append(run)

    def tie_concat(self, out: Any, dim: int, parts: list[Any]) -> None:
        """out's keep along ``dim`` is the concatenation of the parts' keeps (cat / split)."""
        if not self.tracked(out):
            return
        if not all(self.tracked(p) for p in parts):
            self.pin(out, "concat with a constant", [dim])
            for p in parts:
                self.pin(p, "concat with a constant", [dim])
            return
        out_ref = (out.name, dim % len(self.shapes[out.name]))
        part_refs = [(p.name, dim % len(self.shapes[p.name])) for p in parts]

        def run() -> bool:
            joined = torch.cat([self._get(r) for r in part_refs]) | self._get(out_ref)
            changed = self._union(out_ref, joined)
            start = 0
            for r in part_refs:
                n = self._get(r).numel()
                changed |= self._union(r, joined[start:start + n])
                start += n
            return changed
        self.constraints.append(run)

    def solve(self, max_rounds: int = 1000) -> int:
        for rounds in range(1, max_rounds + 1):
            changed = False
            for c in self.constraints:
                changed |= c()
            if not changed:
                return rounds
        raise RuntimeError("mask propagation did not converge")


def _outer(vectors: list[torch.Tensor]) -> torch.Tensor:
    out = vectors[0]
    for v in vectors[1:]:
        out = (out.unsqueeze(-1) & v).flatten()
    return out.flatten()


def reshape_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pair up dims of two shapes with equal products, as a view maps them.

    Example:
        >>> reshape_groups((2, 6, 8), (2, 6, 2, 4))
        [([0], [0]), ([1], [1]), ([2], [2, 3])]
    """
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ga, gb = [], []
        pa = pb = 1
        while True:
            if pa <= pb and i < len(a):
                ga.append(i); pa *= a[i]; i += 1  # noqa: E702
            elif j < len(b):
                gb.append(j); pb *= b[j]; j += 1  # noqa: E702
            else:
                break
            if pa == pb and (i == len(a) or a[i] != 1 or j == len(b)) and ga and gb:
                break
        groups.append((ga, gb))
    return [g for g in groups if g[0] or g[1]]


# --- rules ------------------------------------------------------------------------------------

IDENTITY_OPS = [
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.mul.Scalar, aten.add.Scalar,
    aten.rsub.Scalar, aten.gelu.default, aten.relu.default, aten.relu_.default, aten.tanh.default,
    aten.sigmoid.default, aten.silu.default, aten.exp.default, aten.pow.Tensor_Scalar, aten.dropout.default,
    aten.clone.default, aten.contiguous.default, aten.alias.default, aten.detach.default, aten._to_copy.default,
    aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.type_as.default, aten.hardtanh.default,
    aten.relu6.default, aten.leaky_relu.default, aten.neg.default, aten.hardswish.default,
    aten.hardsigmoid.default, aten.sub.Scalar, aten.div.Scalar, aten.rsub.Tensor,
]


@register_mask_updater(*IDENTITY_OPS)
def _elementwise(node: fx.Node, c: Coupler) -> None:
    for arg in node.args:
        c.tie_right_aligned(arg, node)


@register_mask_updater(aten._softmax.default, aten.softmax.int)
def _softmax(node: fx.Node, c: Coupler) -> None:
    x, dim = node.args[0], node.args[1]
    c.tie_right_aligned(x, node)
    c.pin(node, "softmax normalises along this dim", [dim])


@register_mask_updater(aten.view.default, aten.reshape.default, aten._unsafe_view.default,
                       aten.flatten.using_ints, aten.unflatten.int)
def _view(node: fx.Node, c: Coupler) -> None:
    x = node.args[0]
    if not c.tracked(x) or not c.tracked(node):
        return
    for ga, gb in reshape_groups(c.shapes[x.name], c.shapes[node.name]):
        if ga and gb:
            c.tie_groups(x, ga, node, gb)


@register_mask_updater(aten.permute.default)
def _permute(node: fx.Node, c: Coupler) -> None:
    for out_dim, in_dim in enumerate(node.args[1]):
        c.tie(node.args[0], in_dim, node, out_dim)


@register_mask_updater(aten.transpose.int, aten.t.default)
def _transpose(node: fx.Node, c: Coupler) -> None:
    x = node.args[0]
    if not c.tracked(x):
        return
    nd = len(c.shapes[x.name])
    d0, d1 = (node.args[1] % nd, node.args[2] % nd) if len(node.args) > 2 else (0, 1)
    order = list(range(nd))
    order[d0], order[d1] = order[d1], order[d0]
    for out_dim, in_dim in enumerate(order):
        c.tie(x, in_dim, node, out_dim)


@register_mask_updater(aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.expand.default)
def _shape_only(node: fx.Node, c: Coupler) -> None:
    x = node.args[0]
    if not c.tracked(x) or not c.tracked(node):
        return
    a = [d for d, s in enumerate(c.shapes[x.name]) if s != 1]
    b = [d for d, s in enumerate(c.shapes[node.name]) if s != 1]
    if node.target is aten.expand.default:  # dims expanded from 1 are new; align the rest from the right
        c.tie_right_aligned(x, node)
        return
    for da, db in zip(a, b):
        c.tie(x, da, node, db)


@register_mask_updater(aten.linear.default)
def _linear(node: fx.Node, c: Coupler) -> None:
    x, w = node.args[0], node.args[1]
    b = node.args[2] if len(node.args) > 2 else None
    c.tie(x, -1, w, 1)
    c.tie(node, -1, w, 0)
    if b is not None:
        c.tie(node, -1, b, 0)
    if c.tracked(x):
        for d in range(len(c.shapes[x.name]) - 1):
            c.tie(x, d, node, d)


@register_mask_updater(aten.addmm.default)
def _addmm(node: fx.Node, c: Coupler) -> None:  # transformers' Conv1D: bias + x @ W, W is [in, out]
    b, x, w = node.args[:3]
    c.tie(x, 1, w, 0)
    c.tie(node, 1, w, 1)
    c.tie(x, 0, node, 0)
    c.tie_right_aligned(b, node)


@register_mask_updater(aten.mm.default, aten.bmm.default, aten.matmul.default)
def _matmul(node: fx.Node, c: Coupler) -> None:
    a, b = node.args[:2]
    c.tie(a, -1, b, -2)
    c.tie(a, -2, node, -2)
    c.tie(b, -1, node, -1)
    if c.tracked(a) and c.tracked(node):
        for off in range(3, min(len(c.shapes[a.name]), len(c.shapes[node.name])) + 1):
            c.tie(a, -off, node, -off)
    if c.tracked(b) and c.tracked(node):
        for off in range(3, min(len(c.shapes[b.name]), len(c.shapes[node.name])) + 1):
            c.tie(b, -off, node, -off)


@register_mask_updater(aten.embedding.default)
def _embedding(node: fx.Node, c: Coupler) -> None:
    w = node.args[0]
    c.tie(node, -1, w, 1)
    c.pin(w, "embedding rows are looked up by token id", [0])


@register_mask_updater(aten.layer_norm.default)
def _layer_norm(node: fx.Node, c: Coupler) -> None:
    x = node.args[0]
    c.tie_right_aligned(x, node)
    for p in node.args[2:4]:
        if isinstance(p, fx.Node):
            c.tie_right_aligned(p, node)


@register_mask_updater(aten.scaled_dot_product_attention.default)
def _sdpa(node: fx.Node, c: Coupler) -> None:
    q, k, v = node.args[:3]
    for t in (k, v, node):
        c.tie(q, 0, t, 0)
        c.tie(q, 1, t, 1)
    c.tie(q, 2, node, 2)
    c.tie(q, 3, k, 3)
    c.tie(k, 2, v, 2)
    c.tie(v, 3, node, 3)
    for extra in node.args[3:4]:
        c.pin(extra, "attention mask")


_CONV = [aten.conv1d.default, aten.conv2d.default, aten.conv3d.default]


@register_mask_updater(*_CONV, aten.convolution.default)
def _conv(node: fx.Node, c: Coupler) -> None:
    x, w = node.args[0], node.args[1]
    b = node.args[2] if len(node.args) > 2 else None
    if node.target is aten.convolution.default:
        transposed, groups = node.args[6], node.args[8]
    else:
        transposed, groups = False, (node.args[6] if len(node.args) > 6 else 1)
    if groups != 1:
        _tie_groups_of_conv(c, node, x, w, b, groups, transposed)
        return
    c.tie(x, 1, w, 0 if transposed else 1)
    c.tie(node, 1, w, 1 if transposed else 0)
    if isinstance(b, fx.Node):
        c.tie(node, 1, b, 0)
    c.tie(x, 0, node, 0)
    if c.tracked(x):
        c.pin(x, "convolution window", list(range(2, len(c.shapes[x.name]))))
        c.pin(node, "convolution window", list(range(2, len(c.shapes[x.name]))))
        c.pin(w, "convolution window", list(range(2, len(c.shapes[x.name]))))


def _tie_groups_of_conv(c: Coupler, node: fx.Node, x: Any, w: Any, b: Any, groups: int, transposed: bool) -> None:
    """A grouped convolution keeps whole groups, and the same positions within every kept group:
    channel (group g, position p) stays iff group g and position p do, for inputs and outputs
    alike, so the smaller convolution is again grouped (a depthwise one: channel i in is channel i
    out). Its weight holds the positions of one group along its second dim."""
    if c.tracked(x) and c.tracked(node):
        c.tie(x, 0, node, 0)
        spatial = list(range(2, len(c.shapes[x.name])))
        for t in (x, node, w):
            c.pin(t, "convolution window", spatial)
    full_in = [(x, 1)] + ([(w, 0)] if transposed else [])
    full_out = [(node, 1)] + ([] if transposed else [(w, 0)]) + ([(b, 0)] if isinstance(b, fx.Node) else [])
    pos_in = [] if transposed else [(w, 1)]
    pos_out = [(w, 1)] if transposed else []
    untracked = [t for t, _ in full_in + full_out + pos_in + pos_out if not c.tracked(t)]
    if untracked:
        for t, _ in full_in + full_out + pos_in + pos_out:
            c.pin(t, "grouped convolution with an untracked operand")
        return
    refs = {k: [(t.name, d) for t, d in v] for k, v in
            (("full_in", full_in), ("full_out", full_out), ("pos_in", pos_in), ("pos_out", pos_out))}
    depthwise = c.shapes[x.name][1] == groups == c.shapes[node.name][1]
    one_to_one = refs["full_out"] + (refs["full_in"] if depthwise else [])
    c.edges.extend(itertools.pairwise(one_to_one))  # depthwise: channel i in is channel i out

    def run() -> bool:
        kept = [c._get(r).reshape(groups, -1) for r in refs["full_in"] + refs["full_out"]]
        whole = torch.stack([k.any(1) for k in kept]).any(0)
        changed = False
        for side in ("in", "out"):
            full = [c._get(r).reshape(groups, -1) for r in refs[f"full_{side}"]]
            pos = torch.stack([f.any(0) for f in full] + [c._get(r) for r in refs[f"pos_{side}"]]).any(0)
            grid = (whole[:, None] & pos[None, :]).flatten()
            for r in refs[f"full_{side}"]:
                changed |= c._union(r, grid)
            for r in refs[f"pos_{side}"]:
                changed |= c._union(r, pos)
        return changed
    c.constraints.append(run)


@register_mask_updater(aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input)
def _conv_transpose(node: fx.Node, c: Coupler) -> None:
    x, w = node.args[0], node.args[1]
    groups = node.args[6] if len(node.args) > 6 else 1
    b = node.args[2] if len(node.args) > 2 else None
    if groups != 1:
        _tie_groups_of_conv(c, node, x, w, b, groups, True)
        return
    c.tie(x, 1, w, 0)
    c.tie(node, 1, w, 1)
    if isinstance(b, fx.Node):
        c.tie(node, 1, b, 0)
    c.tie(x, 0, node, 0)
    if c.tracked(x):
        spatial = list(range(2, len(c.shapes[x.name])))
        for t in (x, node, w):
            c.pin(t, "convolution window", spatial)


@register_mask_updater(aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default,
                       aten.adaptive_avg_pool3d.default, aten.avg_pool1d.default, aten.avg_pool2d.default,
                       aten.avg_pool3d.default, aten.max_pool1d.default, aten.max_pool2d.default,
                       aten.max_pool3d.default, aten.upsample_nearest1d.vec, aten.upsample_nearest2d.vec,
                       aten.upsample_nearest3d.vec, aten.upsample_bilinear2d.vec, aten.upsample_linear1d.vec,
                       aten.upsample_trilinear3d.vec)
def _pool(node: fx.Node, c: Coupler) -> None:
    x = node.args[0]
    c.tie(x, 0, node, 0)
    c.tie(x, 1, node, 1)
    if c.tracked(x):
        spatial = list(range(2, len(c.shapes[x.name])))
        c.pin(x, "pooling window", spatial)
        c.pin(node, "pooling window", spatial)


@register_mask_updater(aten.mean.dim, aten.sum.dim_IntList)
def _reduce(node: fx.Node, c: Coupler) -> None:
    x = node.args[0]
    if not c.tracked(x):
        return
    nd = len(c.shapes[x.name])
    dims = sorted(d % nd for d in (node.args[1] or range(nd)))
    keepdim = len(node.args) > 2 and node.args[2]
    out_dim = 0
    for d in range(nd):
        if d in dims:
            if keepdim:
                out_dim += 1
            continue
        c.tie(x, d, node, out_dim)
        out_dim += 1
    if node.target is aten.mean.dim:  # a mean over fewer elements is another number
        c.pin(x, "mean over this dim", dims)


@register_mask_updater(aten.cat.default)
def _cat(node: fx.Node, c: Coupler) -> None:
    parts = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else 0
    if not c.tracked(node):
        return
    nd = len(c.shapes[node.name])
    for p in parts:
        if c.tracked(p):
            for d in range(nd):
                if d != dim % nd:
                    c.tie(p, d, node, d)
    c.tie_concat(node, dim, list(parts))


@register_mask_updater(aten._native_batch_norm_legit_no_training.default)
def _batch_norm_tuple(node: fx.Node, c: Coupler) -> None:
    pass  # handled at its getitem(0) by _getitem


@register_mask_updater(aten.batch_norm.default)
def _batch_norm(node: fx.Node, c: Coupler) -> None:
    _tie_batch_norm(node, node, c)


def _tie_batch_norm(op: fx.Node, out: fx.Node, c: Coupler) -> None:
    x = op.args[0]
    c.tie_right_aligned(x, out)
    for p in op.args[1:5]:
        if isinstance(p, fx.Node):
            c.tie(x, 1, p, 0)


@register_mask_updater(operator.getitem)
def _getitem(node: fx.Node, c: Coupler) -> None:
    src, index = node.args
    if not isinstance(src, fx.Node):
        return
    if src.target in GETITEM_RULES:
        GETITEM_RULES[src.target](node, c)
        return
    if src.target is aten._native_batch_norm_legit_no_training.default:
        if index == 0:
            _tie_batch_norm(src, node, c)
        return
    if src.target in (aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default):
        x = src.args[0]
        dim = src.args[2] if len(src.args) > 2 else 0
        if index == 0:  # one concat relation for all parts, registered once
            parts = [u for u in src.users if u.target is operator.getitem]
            parts.sort(key=lambda u: u.args[1])
            if c.tracked(x):
                nd = len(c.shapes[x.name])
                for p in parts:
                    for d in range(nd):
                        if d != dim % nd:
                            c.tie(x, d, p, d)
                c.tie_concat(x, dim, parts)
        return
    c.pin(node, f"output {index} of {src.target}")


@register_mask_updater(aten.select.int)
def _select(node: fx.Node, c: Coupler) -> None:
    x, dim = node.args[0], node.args[1]
    if not c.tracked(x):
        return
    nd = len(c.shapes[x.name])
    dim %= nd
    c.pin(x, "an index is selected along this dim", [dim])
    for d in range(nd):
        if d != dim:
            c.tie(x, d, node, d if d < dim else d - 1)


@register_mask_updater(aten.slice.Tensor)
def _slice(node: fx.Node, c: Coupler) -> None:
    x = node.args[0]
    if not c.tracked(x):
        return
    nd = len(c.shapes[x.name])
    dim = (node.args[1] if len(node.args) > 1 else 0) % nd
    same = c.shapes[x.name][dim] == c.shapes[node.name][dim]
    for d in range(nd):
        if d != dim or same:
            c.tie(x, d, node, d)
    if not same:  # offsets would move if this dim shrank
        c.pin(x, "sliced along this dim", [dim])
        c.pin(node, "sliced along this dim", [dim])


@register_mask_updater(aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default,
                       aten._assert_tensor_metadata.default)
def _no_constraint(node: fx.Node, c: Coupler) -> None:
    """Splits are tied at their getitem users; metadata asserts check nothing that shrinks."""


@register_mask_updater(aten.group_norm.default)
def _group_norm(node: fx.Node, c: Coupler) -> None:
    x, groups = node.args[0], node.args[1]
    c.tie_right_aligned(x, node)
    for p in node.args[2:4]:
        if isinstance(p, fx.Node):
            c.tie(x, 1, p, 0)
    if not c.tracked(x):
        return
    ref = (x.name, 1)

    def whole_groups() -> bool:  # a group's statistics need all of its channels or none
        grid = c._get(ref).reshape(groups, -1)
        return c._union(ref, grid.any(1, keepdim=True).expand_as(grid).flatten())
    c.constraints.append(whole_groups)
