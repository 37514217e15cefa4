"""Which elements of every tensor in the graph can matter: *alive* (not constantly zero, given
the masks) and *used* (some kept output depends on it).

Each op is evaluated on 0/1 masks instead of values. For the ops in ``SAME_OP`` the op itself
does it: on non-negative 0/1 inputs, a linear map, a matmul, a sum or a zero-preserving
activation is non-zero exactly where some alive input reaches it, and its vector-Jacobian
product with a 0/1 cotangent is non-zero exactly where an input reaches a used output. Ops whose
algebra differs (softmax, normalisations, attention, subtraction) have rules in ``CUSTOM``; any
other op is taken as "everything alive, everything used" — never wrong, only less pruning. The
rules live in liveness_rules.py; this module runs them over the graph.
Masks never look at values, so a constant dummy input (all-zero ``token_type_ids``) cannot make
anything prunable.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
from torch import fx

from .liveness_rules import (
    CUSTOM,
    DIRECT_USED,
    PARAM_USED,
    SAME_OP,
    _any_but,
    _bin,
    _ones,
    _reduce_to,
    register_liveness_rule,
)

__all__ = ["Liveness", "register_liveness_rule"]
aten = torch.ops.aten


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
        # node -> FoldPlan or None: constant input channels the node absorbs, so nothing upstream
        # has to keep them (see constants.py); set before run_backward
        self.fold_planner: Callable[[fx.Node], Any] | None = None
        self.folds: list[Any] = []

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
            plan = self.fold_planner(node) if self.fold_planner is not None and node.name not in self.unknown else None
            dropped = None
            if plan is not None:
                self.folds.append(plan)
                shape = [1] * self.alive[plan.x].dim()
                shape[plan.dim] = -1
                dropped = torch.ones(self.alive[plan.x].shape[plan.dim])
                dropped[list(plan.values)] = 0.0
                dropped = dropped.reshape(shape)
            for arg_node, used in self._backward(node, used_out):
                if dropped is not None and used is not None and arg_node.name == plan.x:
                    used = used * dropped  # folded into this node's bias or carrier: not needed upstream
                self._accumulate(arg_node, used)
            self._param_usage(node, used_out, (plan.x, dropped) if dropped is not None else None)

    def _param_usage(self, node: fx.Node, used_out: Any, dropped: tuple[str, torch.Tensor] | None = None) -> None:
        """Per-dim used vectors of the parameters ``node`` reads."""
        params = [a for a in node.args if isinstance(a, fx.Node) and a.name in self.params]
        if not params:
            return
        rule = PARAM_USED.get(node.target)
        if rule is not None and node.name not in self.unknown:
            args = self._arg(node.args, for_op=node.target)
            if dropped is not None:  # the weight's columns of folded channels are not needed either
                args = tuple(a * dropped[1] if isinstance(n, fx.Node) and n.name == dropped[0] else a
                             for n, a in zip(node.args, args))
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
        shape = self.values[param.name].shape
        return _reduce_to(_bin(grad), shape) if grad is not None else torch.ones(shape)

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
        rule = CUSTOM[op][1] if op in CUSTOM else DIRECT_USED.get(op)
        used = None
        if rule is not None:
            try:
                used = rule(used_out, *args, **kwargs)
            except NotImplementedError:
                used = None
        if used is not None:
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
