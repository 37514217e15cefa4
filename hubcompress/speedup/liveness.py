"""Which elements of every tensor in the graph can matter: *alive* (not constantly zero, given
the masks) and *used* (some kept output depends on it).

Each op is evaluated on 0/1 masks instead of values. For the ops in ``SAME_OP`` the op itself
does it: on non-negative 0/1 inputs, a linear map, a matmul, a sum or a zero-preserving
activation is non-zero exactly where some alive input reaches it, and its vector-Jacobian
product with a 0/1 cotangent is non-zero exactly where an input reaches a used output. Ops whose
algebra differs (softmax, normalisations, attention, subtraction) have rules in ``CUSTOM``; any
other op is taken as "everything alive, everything used" — never wrong, only less pruning.
Masks never look at values, so a constant dummy input (all-zero ``token_type_ids``) cannot make
anything prunable.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
from torch import fx

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


def _div_alive(a: Any, b: Any) -> Any:
    return _bin(torch.as_tensor(a))


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
    aten.sub.Tensor: (_sub_alive, None),
    aten.rsub.Scalar: (_sub_alive, None),
    aten.div.Tensor: (_div_alive, None),
    aten.layer_norm.default: (_layer_norm_alive, _layer_norm_used),
    aten._native_batch_norm_legit_no_training.default: (
        lambda *a: _batch_norm_alive(*a[:5], "tuple"), _batch_norm_used),
    aten.batch_norm.default: (_batch_norm_alive, _batch_norm_used),
    aten._softmax.default: (_softmax_alive, _softmax_used),
    aten.group_norm.default: (_group_norm_alive, _group_norm_used),
    aten.softmax.int: (_softmax_alive, _softmax_used),
    aten.scaled_dot_product_attention.default: (_sdpa_alive, _sdpa_used),
}


def _any_but(t: torch.Tensor, dim: int) -> torch.Tensor:
    dim %= t.dim()
    others = [d for d in range(t.dim()) if d != dim]
    return (t.amax(dim=others) if others else t) > 0


def _linear_params(used: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any = None) -> dict:
    out_used, x_any = _any_but(used, -1).float(), _any_but(x, -1).float()
    w_alive = (w != 0).float()
    rows = (out_used > 0) & ((w_alive @ x_any) > 0)
    cols = (x_any > 0) & ((out_used @ w_alive) > 0)
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


def _conv_params(used: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any = None, *rest: Any) -> dict:
    out_used, x_any = _any_but(used, 1), _any_but(x, 1)
    w_alive = (w.flatten(2).amax(2) != 0).float()  # [out, in]
    rows = out_used & ((w_alive @ x_any.float()) > 0)
    cols = x_any & ((out_used.float() @ w_alive) > 0)
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


class Liveness:
    """Forward alive and backward used masks for every tensor node of a traced graph."""

    def __init__(self, graph: fx.Graph, values: dict[str, Any], tracked: set[str], seeds: dict[str, torch.Tensor],
                 params: set[str]):
        self.graph = graph
        # Parameters enter as their masks and are not differentiated: a weight's used rows and
        # columns follow from the activations it is tied to (coupling), and skipping the
        # weight-sized products keeps BERT-base analysis cheap.
        self.params = params
        self.param_used: dict[str, list[torch.Tensor]] = {}  # parameter node -> used vector per dim
        self.values = values
        self.tracked = tracked  # float nodes derived from parameters or float inputs
        self.alive: dict[str, Any] = {}
        self.used: dict[str, Any] = {}
        self.seeds = seeds  # node -> 0/1 mask of a parameter
        self.unknown: set[str] = set()

    def _arg(self, node: Any, *, for_op: Any) -> Any:
        if isinstance(node, fx.Node):
            if node.name in self.tracked:
                return self.alive[node.name]
            value = self.values.get(node.name)
            # Untracked float tensors enter as "non-zero where the value is" (a constant added
            # to a tracked tensor keeps it alive); ints, bools and attention masks as values.
            if isinstance(value, torch.Tensor) and value.is_floating_point() and \
                    for_op is not aten.scaled_dot_product_attention.default:
                return (value != 0).float()
            return value
        if isinstance(node, (list, tuple)):
            return type(node)(self._arg(n, for_op=for_op) for n in node)
        return node

    def run_forward(self) -> None:
        for node in self.graph.nodes:
            if node.name not in self.tracked:
                continue
            if node.op == "placeholder":
                value = self.values[node.name]
                seed = self.seeds.get(node.name)
                # an unmasked tensor is alive everywhere: a broadcast view, no memory
                self.alive[node.name] = seed if seed is not None else torch.ones(()).expand(value.shape)
            elif node.op == "call_function":
                args = self._arg(node.args, for_op=node.target)
                kwargs = self._arg(node.kwargs, for_op=node.target)
                self.alive[node.name] = self._forward(node, args, kwargs)

    def _forward(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        op = node.target
        with torch.no_grad():
            if op in CUSTOM:
                return _bin(CUSTOM[op][0](*args, **kwargs))
            if op in SAME_OP:
                return _bin(op(*args, **kwargs))
            if op is operator.getitem:
                return args[0][args[1]]
        self.unknown.add(node.name)
        return _ones(self.values[node.name])

    def run_backward(self) -> None:
        """Used masks, from the graph outputs (all used) back to the inputs and parameters."""
        nodes = list(self.graph.nodes)
        for node in nodes:
            if node.op == "output":
                self._mark_output(node.args[0])
        for node in reversed(nodes):
            if node.op != "call_function" or node.name not in self.tracked or node.name not in self.used:
                continue
            used_out = self.used[node.name]
            inputs = [a for a in _flat_nodes(node.args) + _flat_nodes(node.kwargs) if a.name in self.tracked]
            if not inputs:
                continue
            if node.target is operator.getitem:
                src, index = node.args
                previous = self.used.get(src.name)
                full = list(previous if previous is not None else _zeros_like(self.alive[src.name]))
                full[index] = torch.maximum(full[index], used_out)
                self.used[src.name] = type(self.alive[src.name])(full)
                continue
            for arg_node, used in self._backward(node, used_out):
                self._accumulate(arg_node, used)
            self._param_usage(node, used_out)

    def _param_usage(self, node: fx.Node, used_out: Any) -> None:
        """Per-dim used vectors of the parameters ``node`` reads."""
        params = [a for a in node.args if isinstance(a, fx.Node) and a.name in self.params]
        if not params:
            return
        rule = PARAM_USED.get(node.target)
        if rule is not None and node.name not in self.unknown:
            args = self._arg(node.args, for_op=node.target)
            found = rule(used_out, *args)
            pairs = [(node.args[i], vecs) for i, vecs in found.items()
                     if isinstance(node.args[i], fx.Node) and node.args[i].name in self.params]
        else:  # small parameters elsewhere (a CLS token, position embeddings): the general VJP
            pairs = []
            for p in params:
                if node.name in self.unknown or (node.target not in SAME_OP and node.target not in CUSTOM):
                    full = torch.ones(self.values[p.name].shape)
                else:
                    full = self._param_vjp(node, p, used_out)
                pairs.append((p, [_any_but(full, d) for d in range(full.dim())] if full.dim() else []))
        for p, vecs in pairs:
            old = self.param_used.get(p.name)
            self.param_used[p.name] = vecs if old is None else [a | b for a, b in zip(old, vecs)]

    def _param_vjp(self, node: fx.Node, param: fx.Node, used_out: Any) -> torch.Tensor:
        saved = self.params
        self.params = saved - {param.name}
        try:
            grads = dict((n.name, g) for n, g in self._backward(node, used_out) if g is not None)
        finally:
            self.params = saved
        grad = grads.get(param.name)
        return grad if grad is not None else torch.ones(self.values[param.name].shape)

    def _mark_output(self, arg: Any) -> None:
        for n in _flat_nodes(arg):
            if n.name in self.tracked:
                self.used[n.name] = _ones(self.alive[n.name])

    def _accumulate(self, node: fx.Node, used: torch.Tensor | None) -> None:
        if used is None or node.name not in self.tracked or node.name in self.params:
            return
        alive = self.alive[node.name]
        used = _reduce_to(_bin(used), alive.shape)
        previous = self.used.get(node.name)
        self.used[node.name] = used if previous is None else torch.maximum(previous, used)

    def _backward(self, node: fx.Node, used_out: Any) -> list[tuple[fx.Node, Any]]:
        op = node.target
        positions = [(i, a) for i, a in enumerate(node.args)]
        args = self._arg(node.args, for_op=op)
        kwargs = self._arg(node.kwargs, for_op=op)
        if node.name in self.unknown or (op not in SAME_OP and op not in CUSTOM):
            return [(n, _ones(self.alive[n.name])) for n in _flat_nodes(node.args)
                    if n.name in self.tracked and n.name not in self.params]
        if op in CUSTOM and CUSTOM[op][1] is not None:
            used = CUSTOM[op][1](used_out, *args, **kwargs)
            out = []
            for (i, a), u in zip(positions, used):
                if isinstance(a, fx.Node):
                    out.append((a, u))
            return out
        forward = CUSTOM[op][0] if op in CUSTOM else op
        return self._vjp(node, forward, args, kwargs, used_out)

    def _vjp(self, node: fx.Node, forward: Callable, args: Any, kwargs: Any, used_out: Any) -> list:
        slots: list[tuple[fx.Node, tuple]] = []  # tracked arg nodes and where they sit in args
        def wanted(n: Any) -> bool:
            return isinstance(n, fx.Node) and n.name in self.tracked and n.name not in self.params

        for i, a in enumerate(node.args):
            if wanted(a):
                slots.append((a, (i,)))
            elif isinstance(a, (list, tuple)):
                for j, b in enumerate(a):
                    if wanted(b):
                        slots.append((b, (i, j)))
        if not slots:
            return []
        primals = [_at(args, where).float() for _, where in slots]

        def f(*xs: torch.Tensor) -> Any:
            new = list(args)
            for x, (_, where) in zip(xs, slots):
                if len(where) == 1:
                    new[where[0]] = x
                else:
                    inner = list(new[where[0]])
                    inner[where[1]] = x
                    new[where[0]] = type(args[where[0]])(inner)
            return forward(*new, **kwargs)

        out, pullback = torch.func.vjp(f, *primals)
        if isinstance(out, (tuple, list)):
            cotangent = type(out)(c.to(o.dtype) for c, o in zip(used_out, out))
        else:
            cotangent = used_out.to(out.dtype)
        grads = pullback(cotangent)
        return [(n, g.abs()) for (n, _), g in zip(slots, grads)]


def _at(args: Any, where: tuple) -> Any:
    value = args[where[0]]
    return value[where[1]] if len(where) > 1 else value


def _zeros_like(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(torch.zeros_like(v) for v in value)
    return torch.zeros_like(value)


def _flat_nodes(arg: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(arg, lambda n: out.append(n) or n)
    return out
