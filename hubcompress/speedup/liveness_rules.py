"""The per-op rules of liveness (see liveness.py): how an op maps 0/1 *alive* masks forward and
*used* masks backward, and which rows and columns of its parameters a used output needs.

``SAME_OP``: the op itself, evaluated on masks, does it. ``CUSTOM``: ops whose algebra differs
(softmax, normalisations, attention, subtraction). ``DIRECT_USED``: closed forms of the used
masks of common ops, instead of a vector-Jacobian product. ``PARAM_USED``: parameters' used rows
and columns straight from matrix-vector products. ``register_liveness_rule`` adds one.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

aten = torch.ops.aten

SAME_OP = {
    aten.linear.default, aten.addmm.default, aten.mm.default, aten.bmm.default, aten.matmul.default,
    aten.add.Tensor, aten.mul.Tensor, aten.mul.Scalar, aten.add.Scalar, aten.gelu.default, aten.relu.default,
    aten.relu_.default, aten.tanh.default, aten.sigmoid.default, aten.silu.default, aten.exp.default,
    aten.pow.Tensor_Scalar, aten.dropout.default, aten.clone.default, aten.contiguous.default,
    aten.alias.default, aten.detach.default, aten._to_copy.default, aten.to.dtype, aten.to.dtype_layout,
    aten.to.device, aten.type_as.default, aten.view.default, aten.reshape.default, aten._unsafe_view.default,
    aten.permute.default, aten.transpose.int, aten.t.default, aten.unsqueeze.default, aten.squeeze.dim,
    aten.squeeze.dims, aten.expand.default, aten.flatten.using_ints, aten.unflatten.int, aten.cat.default,
    aten.stack.default, aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default,
    aten.slice.Tensor, aten.select.int, aten.embedding.default, aten.index_select.default,
    aten.gather.default, aten.index.Tensor, aten.conv1d.default, aten.conv2d.default, aten.conv3d.default,
    aten.convolution.default, aten.conv_transpose1d.default, aten.conv_transpose2d.input,
    aten.conv_transpose3d.input, aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default,
    aten.avg_pool2d.default, aten.max_pool2d.default, aten.mean.dim, aten.sum.dim_IntList,
    aten.hardtanh.default, aten.relu6.default, aten.leaky_relu.default, aten.neg.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.adaptive_avg_pool3d.default, aten.avg_pool1d.default,
    aten.avg_pool3d.default, aten.max_pool1d.default, aten.max_pool3d.default, aten.upsample_nearest1d.vec,
    aten.upsample_nearest2d.vec, aten.upsample_nearest3d.vec, aten.upsample_bilinear2d.vec,
    aten.upsample_linear1d.vec, aten.upsample_trilinear3d.vec, aten.mul.Scalar, aten.div.Scalar,
}


def _ones(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_ones(v) for v in value)
    return torch.ones_like(value, dtype=torch.float32) if isinstance(value, torch.Tensor) else value


def _bin(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_bin(v) for v in value)
    if isinstance(value, torch.Tensor):
        return (value != 0).float()
    return value


def _reduce_to(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Any-reduce a broadcast mask back to an input's shape."""
    while mask.dim() > len(shape):
        mask = mask.amax(0)
    for d, s in enumerate(shape):
        if s == 1 and mask.shape[d] != 1:
            mask = mask.amax(d, keepdim=True)
    return mask


# --- custom rules: (args with masks for tracked floats) -> alive ; and used -------------------

def _sub_alive(a: Any, b: Any, alpha: Any = 1) -> Any:
    return _bin(torch.as_tensor(a).abs() + torch.as_tensor(b).abs())


def _div_alive(a: Any, b: Any, *rest: Any, **kw: Any) -> Any:
    return _bin(torch.as_tensor(a))


def _both_used(used: torch.Tensor, a: Any, b: Any, *rest: Any, **kw: Any) -> list:
    """``a - b``, ``b - a``: an output reads both operands where it is used (a comparison-style
    alive rule has no useful vector-Jacobian product)."""
    return [used, used]


def _div_used(used: torch.Tensor, a: Any, b: Any, *rest: Any, **kw: Any) -> list:
    """``a / b`` reads the divisor only where the dividend can be non-zero."""
    return [used, used * (a != 0) if isinstance(a, torch.Tensor) else used]


def _layer_norm_alive(x: torch.Tensor, shape: Any, w: Any = None, b: Any = None, *rest: Any) -> torch.Tensor:
    keep = torch.ones(list(shape))
    if w is not None:
        keep = (w != 0).float() if b is None else ((w != 0) | (b != 0)).float()
    return torch.ones_like(x) * keep


def _layer_norm_used(used: torch.Tensor, x: torch.Tensor, shape: Any, w: Any = None, b: Any = None, *rest: Any) -> list:
    dims = list(range(x.dim() - len(shape), x.dim()))
    row = used.amax(dim=dims, keepdim=True)  # the statistics read every element of a used row
    lead = list(range(x.dim() - len(shape)))
    param_used = used.amax(dim=lead) if lead else used
    return [row.expand_as(x), None, param_used if w is not None else None, param_used if b is not None else None]


def _batch_norm_alive(x: torch.Tensor, w: Any, b: Any, rm: Any, rv: Any, *rest: Any) -> Any:
    shape = [1, -1] + [1] * (x.dim() - 2)
    alive = torch.ones(x.shape[1]) if w is None else (w != 0).float()
    if rm is not None:
        alive = alive * ((x.transpose(0, 1).reshape(x.shape[1], -1).amax(1) > 0) | (rm != 0)).float()
    if b is not None:
        alive = ((alive > 0) | (b != 0)).float()
    out = torch.ones_like(x) * alive.reshape(shape)
    return (out, torch.ones(0), torch.ones(0)) if rest and rest[-1] == "tuple" else out


def _batch_norm_used(used: Any, x: torch.Tensor, w: Any, b: Any, rm: Any, rv: Any, *rest: Any) -> list:
    out_used = used[0] if isinstance(used, (tuple, list)) else used
    channel = out_used.transpose(0, 1).reshape(x.shape[1], -1).amax(1)
    return [out_used, channel if w is not None else None, channel if b is not None else None,
            channel if rm is not None else None, channel if rv is not None else None]


def _group_norm_alive(x: torch.Tensor, groups: int, w: Any = None, b: Any = None, *rest: Any) -> torch.Tensor:
    alive = torch.ones(x.shape[1])
    if w is not None:
        alive = (w != 0).float() if b is None else ((w != 0) | (b != 0)).float()
    return torch.ones_like(x) * alive.reshape([1, -1] + [1] * (x.dim() - 2))


def _group_norm_used(used: torch.Tensor, x: torch.Tensor, groups: int, *rest: Any) -> list:
    per_group = used.reshape(used.shape[0], groups, -1).amax(-1, keepdim=True)  # statistics read the group
    return [per_group.expand(used.shape[0], groups, used[0].numel() // groups).reshape(used.shape)]


def _rows_once(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to the rows of ``t`` (last dim), computed once when every row is the same
    (masks usually are: every token, every pixel alike)."""
    rows = t.reshape(-1, t.shape[-1])
    if rows.shape[0] > 1 and bool((rows == rows[:1]).all()):
        one = fn(rows[:1])
        return one.expand(rows.shape[0], one.shape[-1]).reshape(*t.shape[:-1], one.shape[-1])
    out = fn(rows)
    return out.reshape(*t.shape[:-1], out.shape[-1])


def _linear_alive(x: torch.Tensor, w: torch.Tensor, b: Any = None) -> torch.Tensor:
    if is_full(w):  # every output reads every input: alive where any input of its row is
        out = x.amax(-1, keepdim=True).expand(*x.shape[:-1], w.shape[0])
    else:
        wf = w.float()
        out = _rows_once(lambda r: r.float() @ wf.t(), x)
    return out + b if isinstance(b, torch.Tensor) else out


def _linear_used(used: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any = None) -> list:
    if is_full(w):
        return [used.amax(-1, keepdim=True).expand(*used.shape[:-1], w.shape[1]), None, None]
    wf = w.float()
    return [_rows_once(lambda r: r.float() @ wf, used), None, None]


def _softmax_alive(x: torch.Tensor, dim: int, *rest: Any) -> torch.Tensor:
    return torch.ones_like(x)


def _softmax_used(used: torch.Tensor, x: torch.Tensor, dim: int, *rest: Any) -> list:
    return [used.amax(dim, keepdim=True).expand_as(x)]


def _sdpa_alive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: Any, **kw: Any) -> torch.Tensor:
    # softmax weights are positive: an output is alive where any value row is alive
    out_shape = list(q.shape[:-1]) + [v.shape[-1]]
    return v.amax(-2, keepdim=True).expand(out_shape).clone()


def _sdpa_used(used: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: Any, **kw: Any) -> list:
    per_query = used.amax(-1, keepdim=True)
    per_head = used.amax((-2, -1), keepdim=True)
    return [per_query.expand_as(q), per_head.expand_as(k), used.amax(-2, keepdim=True).expand_as(v)]


Rule = tuple[Callable[..., Any], Callable[..., list] | None]
CUSTOM: dict[Any, Rule] = {
    aten.sub.Tensor: (_sub_alive, _both_used),
    aten.sub.Scalar: (_sub_alive, _both_used),
    aten.rsub.Scalar: (_sub_alive, _both_used),
    aten.rsub.Tensor: (_sub_alive, _both_used),
    aten.div.Tensor: (_div_alive, _div_used),
    aten.layer_norm.default: (_layer_norm_alive, _layer_norm_used),
    aten._native_batch_norm_legit_no_training.default: (
        lambda *a: _batch_norm_alive(*a[:5], "tuple"), _batch_norm_used),
    aten.batch_norm.default: (_batch_norm_alive, _batch_norm_used),
    aten._softmax.default: (_softmax_alive, _softmax_used),
    aten.group_norm.default: (_group_norm_alive, _group_norm_used),
    aten.softmax.int: (_softmax_alive, _softmax_used),
    aten.scaled_dot_product_attention.default: (_sdpa_alive, _sdpa_used),
    aten.linear.default: (_linear_alive, _linear_used),
}

# Used masks of common ops in closed form, instead of a vector-Jacobian product through
# torch.func (its set-up dominates on small tensors). An element-wise op passes "used" straight
# back: the only elements where that says more than the VJP are dead ones, and a dead element's
# "used" reaches only other dead elements upstream.
_PASS = lambda used, x, *rest, **kw: [used]
_SAME_SHAPE = [
    aten.gelu.default, aten.relu.default, aten.tanh.default, aten.sigmoid.default, aten.silu.default,
    aten.exp.default, aten.pow.Tensor_Scalar, aten.dropout.default, aten.clone.default, aten.contiguous.default,
    aten.alias.default, aten.detach.default, aten._to_copy.default, aten.to.dtype, aten.to.dtype_layout,
    aten.to.device, aten.hardtanh.default, aten.relu6.default, aten.leaky_relu.default, aten.neg.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.expand.default, aten.mul.Scalar, aten.div.Scalar,
    aten.add.Scalar,
]


def _mul_used(used: torch.Tensor, a: Any, b: Any) -> list:
    def read(other: Any) -> Any:
        return used * (other != 0) if isinstance(other, torch.Tensor) else (used if other != 0 else used * 0)
    return [read(b), read(a)]


def _reshape_used(used: torch.Tensor, x: torch.Tensor, *rest: Any) -> list:
    return [used.reshape(x.shape)]


def _transpose_used(used: torch.Tensor, x: torch.Tensor, d0: int = 0, d1: int = 1) -> list:
    return [used.transpose(d0, d1)]


def _permute_used(used: torch.Tensor, x: torch.Tensor, dims: Any) -> list:
    inverse = [0] * len(dims)
    for i, d in enumerate(dims):
        inverse[d % len(dims)] = i
    return [used.permute(inverse)]


def _conv_used(grad_input: Callable) -> Callable[..., list]:
    def used_of(used: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any = None, stride: Any = 1,
                padding: Any = 0, dilation: Any = 1, groups: int = 1) -> list:
        if isinstance(padding, str):  # "same" / "valid": leave it to the generic product
            raise NotImplementedError
        return [grad_input(x.shape, w.float(), used.float(), stride, padding, dilation, groups), None, None]
    return used_of


DIRECT_USED: dict[Any, Callable[..., list]] = {op: _PASS for op in _SAME_SHAPE}
DIRECT_USED.update({
    aten.conv1d.default: _conv_used(torch.nn.grad.conv1d_input),
    aten.conv2d.default: _conv_used(torch.nn.grad.conv2d_input),
    aten.conv3d.default: _conv_used(torch.nn.grad.conv3d_input),
})
DIRECT_USED.update({
    aten.add.Tensor: lambda used, a, b, *rest, **kw: [used, used],
    aten.mul.Tensor: _mul_used,
    aten.type_as.default: lambda used, x, other: [used, None],
    aten.view.default: _reshape_used, aten.reshape.default: _reshape_used, aten._unsafe_view.default: _reshape_used,
    aten.flatten.using_ints: _reshape_used, aten.unflatten.int: _reshape_used, aten.squeeze.dim: _reshape_used,
    aten.squeeze.dims: _reshape_used, aten.unsqueeze.default: _reshape_used,
    aten.transpose.int: _transpose_used, aten.t.default: lambda used, x: [used.t()],
    aten.permute.default: _permute_used,
})


def _any_but(t: torch.Tensor, dim: int) -> torch.Tensor:
    dim %= t.dim()
    others = [d for d in range(t.dim()) if d != dim]
    return (t.amax(dim=others) if others else t) > 0


def is_full(mask: Any) -> bool:
    """An unmasked parameter's mask: a stride-0 view of ones (no memory, nothing to compute)."""
    return isinstance(mask, torch.Tensor) and mask.dim() > 0 and not any(mask.stride())


def _matvec(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``w @ v`` on 0/1 masks, without materialising a full mask."""
    if is_full(w):
        return v.amax().expand(w.shape[0]) if v.numel() else torch.zeros(w.shape[0])
    return w.float() @ v


def _linear_params(used: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any = None) -> dict:
    out_used, x_any = _any_but(used, -1).float(), _any_but(x, -1).float()
    rows = (out_used > 0) & (_matvec(w, x_any) > 0)
    cols = (x_any > 0) & (_matvec(w.t(), out_used) > 0)
    found = {1: [rows, cols]}
    if b is not None:
        found[2] = [out_used > 0]
    return found


def _addmm_params(used: torch.Tensor, b: Any, x: torch.Tensor, w: torch.Tensor, *rest: Any) -> dict:
    out_used, x_any = _any_but(used, -1).float(), _any_but(x, -1).float()
    w_alive = (w != 0).float()  # [in, out]
    found = {2: [(x_any > 0) & ((w_alive @ out_used) > 0), (out_used > 0) & ((x_any @ w_alive) > 0)]}
    if isinstance(b, torch.Tensor) and b.dim() == 1:
        found[0] = [out_used > 0]
    return found


def _embedding_params(used: torch.Tensor, w: torch.Tensor, idx: Any, *rest: Any) -> dict:
    return {0: [torch.ones(w.shape[0], dtype=torch.bool), _any_but(used, -1)]}


def _norm_params(used: torch.Tensor, x: torch.Tensor, shape: Any, w: Any = None, b: Any = None, *rest: Any) -> dict:
    channel = _any_but(used, -1)
    return {i: [channel] for i, p in ((2, w), (3, b)) if isinstance(p, torch.Tensor)}


def _batch_norm_params(used: Any, x: torch.Tensor, w: Any, b: Any, rm: Any, rv: Any, *rest: Any) -> dict:
    out_used = used[0] if isinstance(used, (tuple, list)) else used
    channel = _any_but(out_used, 1)
    scaled = channel & (w != 0) if isinstance(w, torch.Tensor) else channel  # stats matter where w does
    found = {}
    for i, p, vec in ((1, w, channel), (2, b, channel), (3, rm, scaled), (4, rv, scaled)):
        if isinstance(p, torch.Tensor):
            found[i] = [vec]
    return found


def _conv_params(used: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any = None, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, *rest: Any) -> dict:
    out_used, x_any = _any_but(used, 1), _any_but(x, 1)
    # grouped: output channel o of group g reads input channels g*k..(g+1)*k-1 through w[o, :]
    w_alive = (w.flatten(2).amax(2) != 0).float().reshape(groups, -1, w.shape[1])  # [g, out/g, in/g]
    x_group = x_any.float().reshape(groups, -1)  # [g, in/g]
    out_group = out_used.float().reshape(groups, -1)  # [g, out/g]
    rows = out_used & (torch.einsum("gok,gk->go", w_alive, x_group).flatten() > 0)
    cols = ((x_group > 0) & (torch.einsum("go,gok->gk", out_group, w_alive) > 0)).any(0)
    found = {1: [rows, cols] + [torch.ones(k, dtype=torch.bool) for k in w.shape[2:]]}
    if isinstance(b, torch.Tensor):
        found[2] = [out_used]
    return found


# op -> fn(used_out, *args) -> {arg position: [used vector per dim]}: the used rows / columns of a
# parameter straight from matrix-vector products, instead of a weight-sized vector-Jacobian product.
PARAM_USED: dict[Any, Callable[..., dict]] = {
    aten.linear.default: _linear_params,
    aten.addmm.default: _addmm_params,
    aten.embedding.default: _embedding_params,
    aten.layer_norm.default: _norm_params,
    aten._native_batch_norm_legit_no_training.default: _batch_norm_params,
    aten.batch_norm.default: _batch_norm_params,
    aten.group_norm.default: lambda used, x, groups, w=None, b=None, *r: {
        i: [_any_but(used, 1)] for i, p in ((2, w), (3, b)) if isinstance(p, torch.Tensor)},
    aten.conv1d.default: _conv_params,
    aten.conv2d.default: _conv_params,
    aten.conv3d.default: _conv_params,
}


def register_liveness_rule(op: Any, alive: Callable[..., Any], used: Callable[..., list] | None = None) -> None:
    """Add a rule for an aten op: ``alive(*args)`` on 0/1 masks and ``used(used_out, *args)``
    returning one used-mask (or None) per argument. Without ``used`` the VJP of ``alive`` is used."""
    CUSTOM[op] = (alive, used)
