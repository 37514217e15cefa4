"""Concrete tracing: ``torch.export`` runs the model with the dummy input, so Python control flow
in transformers 5 resolves; every graph node records the module it came from.

A user may pass their own ``torch.fx.GraphModule`` instead (its ``get_attr`` nodes name the
parameters); either way the result is a :class:`TracedGraph`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def _owner(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    # torch.export writes e.g. "L['self'].bert.encoder.layer[0]" or plain FQNs; normalise.
    return path.replace("L['self'].", "").replace("L['self']", "").replace("[", ".").replace("]", "")


def trace(model: nn.Module, dummy_input: Any) -> TracedGraph:
    """Export ``model`` on ``dummy_input`` and record every node's concrete value."""
    args, kwargs = normalise_dummy_input(dummy_input)
    try:
        with torch.no_grad():
            exported = torch.export.export(model, args, kwargs, strict=False)
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
    buffer_names = {name for name, _ in model.named_buffers(remove_duplicate=False)}
    traced = TracedGraph(graph, params, user_inputs, buffers={n for n, f in params.items() if f in buffer_names})
    traced.owners = {n.name: ".".join(params.get(n.name, "").split(".")[:-1]) for n in graph.nodes}
    traced.values = _run(graph, env)
    return traced
