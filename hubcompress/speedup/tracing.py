"""Concrete tracing: ``torch.export`` runs the model with the dummy input, so Python control flow
in transformers 5 resolves; every graph node records the module it came from.

A user may pass their own ``torch.fx.GraphModule`` instead (its ``get_attr`` nodes name the
parameters); either way the result is a :class:`TracedGraph`.

In-place ops (``nn.ReLU(inplace=True)``, ``out += identity``: torchvision's models are full of
them) are rewritten to their functional forms first, so the analysis sees one value per node and
the concrete run never writes into the model's parameters.
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import fx, nn

from ..errors import ReplacementError


@dataclass
class TracedGraph:
    """A graph of aten ops, which nodes are parameters (by name), and concrete node values."""

    graph: fx.Graph
    params: dict[str, str]  # node name -> parameter / buffer FQN
    user_inputs: list[str]
    values: dict[str, Any] = field(default_factory=dict)  # node name -> concrete value
    owners: dict[str, str] = field(default_factory=dict)  # node name -> innermost module FQN
    buffers: set[str] = field(default_factory=set)  # the nodes of ``params`` that are buffers


def normalise_dummy_input(dummy_input: Any) -> tuple[tuple, dict]:
    """A tensor, a tuple of positional arguments, or a dict of keyword arguments."""
    if isinstance(dummy_input, torch.Tensor):
        return (dummy_input,), {}
    if isinstance(dummy_input, (tuple, list)):
        return tuple(dummy_input), {}
    if isinstance(dummy_input, dict):
        return (), dict(dummy_input)
    raise ReplacementError(f"dummy_input must be a tensor, a tuple or a dict of keyword arguments, "
                           f"got {type(dummy_input).__name__}.")


def module_call(node: fx.Node) -> tuple[str, str] | None:
    """(an id of the module call, the module's FQN) of the innermost module ``node`` ran in, or
    None; the id tells two calls of one module apart (torch.export's stack key, ``relu@1``)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    key, (path, *_) = list(stack.items())[-1]
    # torch.export writes e.g. "L['self'].bert.encoder.layer[0]" or plain FQNs; normalise.
    return key, path.replace("L['self'].", "").replace("L['self']", "").replace("[", ".").replace("]", "")


def _owner(node: fx.Node) -> str:
    call = module_call(node)
    return call[1] if call is not None else ""


def _functional_form(op: Any) -> Any:
    """``aten.relu_.default`` -> ``aten.relu.default``: the out-of-place twin of an op that writes
    into its first argument, or None for any other op."""
    schema = getattr(op, "_schema", None)
    if schema is None or not schema.is_mutable or not schema.arguments:
        return None
    first = schema.arguments[0].alias_info
    name = schema.name.split("::")[-1]
    if first is None or not first.is_write or not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, op._overloadname, None) if packet is not None else None


def _aliases(node: fx.Node) -> bool:
    """Whether ``node``'s value may share memory with another node's (a view, a split part, the
    result of an in-place op, which is its first argument)."""
    if node.op == "placeholder":
        return True
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:
        return _aliases(node.args[0]) if isinstance(node.args[0], fx.Node) else False
    schema = getattr(node.target, "_schema", None)
    return bool(schema is not None and schema.returns and schema.returns[0].alias_info is not None)


def _write_is_private(node: fx.Node, x: fx.Node, order: dict[fx.Node, int]) -> bool:
    """Whether the write of in-place ``node`` into ``x`` can be seen only through ``x``: walk up
    the chain of views (and earlier in-place results) ``x`` comes from to the tensor that owns
    the memory; nothing else may read any of them after ``node``."""
    chain, current = [], x
    while _aliases(current):
        if current.op != "call_function" or not current.args or not isinstance(current.args[0], fx.Node):
            return False  # a graph input or parameter: the caller would see the write
        chain.append(current)
        current = current.args[0]
    chain.append(current)
    allowed = {node, *chain}
    for tensor in chain[1:]:
        if any(u not in allowed and order.get(u, -1) > order[node] for u in tensor.users):
            return False
    return True


def functionalize(graph: fx.Graph) -> bool:
    """Rewrite ``y = op_(x)`` as ``y = op(x)`` with every later reader of ``x`` reading ``y``.

    Exact when nothing but ``x`` can see the write: no earlier view of ``x``, no graph input, and
    when ``x`` is itself a view (or an earlier in-place result), no later reader of what it views.
    Returns False, changing nothing, otherwise or when another mutating op is present; the caller
    then functionalizes the slow, general way.
    """
    nodes = list(graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    plan: list[tuple[fx.Node, Any]] = []
    for node in nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        functional = _functional_form(node.target)
        if functional is None:
            if node.target._schema.is_mutable:
                return False
            continue
        x = node.args[0]
        if not isinstance(x, fx.Node) or not _write_is_private(node, x, order):
            return False
        if any(_aliases(u) and order[u] < order[node] for u in x.users if u in order):
            return False  # a view of x taken earlier would see the write
        plan.append((node, functional))
    for node, functional in plan:
        x = node.args[0]
        for user in list(x.users):
            if user is not node and order.get(user, -1) > order[node]:
                user.replace_input_with(x, node)
        with graph.inserting_before(node):
            new = graph.call_function(functional, node.args, node.kwargs)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        order[new] = order[node]
    return True


@contextlib.contextmanager
def _no_stack_traces() -> Iterator[None]:
    """torch.export records a Python stack trace per node (a fifth of its time on BERT-base);
    speedup never reads them."""
    config = getattr(torch.fx, "config", None)
    if config is None or not hasattr(config, "do_not_emit_stack_traces"):
        yield
        return
    before = config.do_not_emit_stack_traces
    config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        config.do_not_emit_stack_traces = before


def trace(model: nn.Module, dummy_input: Any) -> TracedGraph:
    """Export ``model`` on ``dummy_input`` and record every node's concrete value."""
    args, kwargs = normalise_dummy_input(dummy_input)
    try:
        with torch.no_grad(), _no_stack_traces():
            exported = torch.export.export(model, args, kwargs, strict=False)
            if not functionalize(exported.graph):  # writes through views: torch's own pass
                exported = exported.run_decompositions({})
    except Exception as exc:  # torch raises many types here; say where and what to do
        raise ReplacementError(
            f"tracing {type(model).__name__} with torch.export failed: {type(exc).__name__}: {exc}. Pass your own "
            "traced torch.fx.GraphModule as graph_module=..., or a dummy_input the model's forward accepts."
        ) from exc
    sig = exported.graph_signature
    params = dict(sig.inputs_to_parameters)
    params.update(sig.inputs_to_buffers)
    user_inputs = list(sig.user_inputs)
    traced = TracedGraph(exported.graph, params, user_inputs, buffers=set(sig.inputs_to_buffers))
    traced.owners = {n.name: _owner(n) for n in exported.graph.nodes}
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(dict(model.named_buffers(remove_duplicate=False)))
    flat_inputs = _flatten_user_inputs(exported, args, kwargs)
    env: dict[str, Any] = {}
    for name, fqn in params.items():
        env[name] = state[fqn].detach()
    for name, value in zip(user_inputs, flat_inputs):
        env[name] = value
    for name, constant in sig.inputs_to_lifted_tensor_constants.items():
        env[name] = exported.constants[constant]
    traced.values = _run(exported.graph, env)
    return traced


def _flatten_user_inputs(exported: Any, args: tuple, kwargs: dict) -> list[Any]:
    flat, _ = torch.utils._pytree.tree_flatten((args, kwargs))
    return [x for x in flat if x is not None and not isinstance(x, (bool, str))]


def _run(graph: fx.Graph, env: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the graph node by node on concrete values (an fx interpreter without a module)."""
    values = dict(env)
    with torch.no_grad():
        for node in graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "call_function":
                a = fx.node.map_arg(node.args, lambda n: values[n.name])
                k = fx.node.map_arg(node.kwargs, lambda n: values[n.name])
                values[node.name] = node.target(*a, **k)
            elif node.op == "output":
                values[node.name] = fx.node.map_arg(node.args[0], lambda n: values[n.name])
    return values


def trace_graph_module(model: nn.Module, graph_module: fx.GraphModule, dummy_input: Any) -> TracedGraph:
    """Use a user-traced GraphModule: its ``get_attr`` nodes name parameters of ``model``."""
    args, kwargs = normalise_dummy_input(dummy_input)
    graph = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    params: dict[str, str] = {}
    user_inputs: list[str] = []
    env: dict[str, Any] = {}
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    inputs = list(args) + [kwargs[p.target] for p in placeholders[len(args):] if p.target in kwargs]
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(dict(model.named_buffers(remove_duplicate=False)))
    modules = dict(graph_module.named_modules())
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            new = graph.placeholder(node.name)
            user_inputs.append(new.name)
            env[new.name] = inputs[len(user_inputs) - 1]
        elif node.op == "get_attr":
            new = graph.placeholder(node.name)
            params[new.name] = node.target
            env[new.name] = state[node.target].detach()
        elif node.op == "call_function":
            new = graph.call_function(node.target, fx.node.map_arg(node.args, mapping.__getitem__),
                                      fx.node.map_arg(node.kwargs, mapping.__getitem__))
        elif node.op == "output":
            new = graph.output(fx.node.map_arg(node.args[0], mapping.__getitem__))
        elif node.op == "call_module" and not node.users:
            continue  # an input guard (torch.export's _guards_fn): checks, computes nothing
        else:
            module = modules.get(node.target)
            raise ReplacementError(
                f"graph_module node {node.name!r} is a {node.op} ({type(module).__name__ if module else node.target}); "
                "pass a graph of functions and get_attr parameters, e.g. torch.export.export(model, ...).module() "
                "or make_fx(model)(*inputs).")
        new.meta = dict(node.meta)
        mapping[node] = new
    if not functionalize(graph):
        raise ReplacementError("graph_module writes in place through a view or into an input; pass a functional "
                               "graph, e.g. torch.export.export(model, ...).run_decompositions({}).module().")
    buffer_names = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    traced = TracedGraph(graph, params, user_inputs, buffers={n for n, f in params.items() if f in buffer_names})
    traced.owners = {n.name: ".".join(params.get(n.name, "").split(".")[:-1]) for n in graph.nodes}
    traced.values = _run(graph, env)
    return traced
