"""``ModelSpeedup.node_infos``: NNI's per-node view of what speedup kept, at module level.

Speedup analyses an aten graph (torch.export's), where a Conv2d is a ``conv2d`` op reading its
weight. NNI users walk a torch.fx graph of modules instead, e.g. to cut a quantizer's
calibration config down to the pruned shapes (NNI's pqd_fuse example)::

    for node, info in speedup.node_infos.items():
        if node.op == "call_module":
            input_mask = speedup.node_infos[node.args[0]].output_masks
            weight_mask = info.param_masks["weight"]

So this module rebuilds that view: one ``call_module`` node per call of a leaf module (every
aten op torch.export recorded inside the call; a module called twice gives two nodes),
``call_function`` nodes for the ops between modules (a residual add), ``placeholder`` nodes for
the model's inputs and an ``output`` node. Each node gets a :class:`NodeInfo` whose masks are
0/1 tensors in the original shapes, 1 where speedup kept the element: slicing a tensor by the
non-zero channels of a mask gives the sped-up model's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from .tracing import TracedGraph, module_call


@dataclass
class NodeInfo:
    """What speedup kept of one node (NNI's ``NodeInfo`` fields that users read).

    ``output_masks``: a 0/1 tensor shaped like the node's original output (None for non-tensor
    outputs). ``param_masks``: ``{parameter name: 0/1 tensor shaped like the original
    parameter}`` for a ``call_module`` node, empty for others.
    """

    output_masks: torch.Tensor | None
    param_masks: dict[str, torch.Tensor] = field(default_factory=dict)


def _kept(name: str, keep: dict[tuple[str, int], torch.Tensor], shapes: dict[str, tuple[int, ...]],
          values: dict[str, Any]) -> torch.Tensor | None:
    """The outer product of a node's per-dim keep vectors; all ones where speedup tracked nothing."""
    shape = shapes.get(name)
    if shape is None:
        value = values.get(name)
        return torch.ones(value.shape) if isinstance(value, torch.Tensor) else None
    mask = torch.ones(shape)
    for d in range(len(shape)):
        vector = keep.get((name, d))
        if vector is not None:
            mask = mask * vector.float().reshape([-1 if i == d else 1 for i in range(len(shape))])
    return mask


def build_node_infos(traced: TracedGraph, keep: dict[tuple[str, int], torch.Tensor],
                     shapes: dict[str, tuple[int, ...]], modules: dict[str, nn.Module]) -> dict[fx.Node, NodeInfo]:
    """The module-level graph of ``traced`` with what speedup kept (``keep``, by aten node and dim)."""
    mask = lambda node: _kept(node.name, keep, shapes, traced.values)  # noqa: E731
    calls: dict[fx.Node, tuple[str, str]] = {}  # aten node -> (call id, module FQN), leaf modules only
    members: dict[str, list[fx.Node]] = {}
    for node in traced.graph.nodes:
        call = module_call(node) if node.op == "call_function" else None
        if call is not None and call[1] in modules and next(modules[call[1]].children(), None) is None:
            calls[node] = call
            members.setdefault(call[0], []).append(node)
    graph = fx.Graph()
    new_of: dict[fx.Node, fx.Node] = {}
    infos: dict[fx.Node, NodeInfo] = {}

    def mapped(node: fx.Node) -> fx.Node:
        if node not in new_of and node.name in traced.params:  # a parameter read outside its module
            new_of[node] = graph.get_attr(traced.params[node.name])
            infos[new_of[node]] = NodeInfo(mask(node))
        return new_of.get(node)  # None: made by an op this view does not show (inside another call)

    for node in traced.graph.nodes:
        if node.op == "placeholder" and node.name not in traced.params:
            new_of[node] = graph.placeholder(node.name)
            infos[new_of[node]] = NodeInfo(mask(node))
        elif node in calls:
            call_id, fqn = calls[node]
            group = members[call_id]
            if node is not group[-1]:  # made once the call's last op is seen: all its inputs exist by then
                continue
            inside = set(group)
            inputs = [a for m in group for a in m.all_input_nodes if a not in inside and a.name not in traced.params]
            new = graph.call_module(fqn, tuple(mapped(a) for a in dict.fromkeys(inputs)))
            outputs = [m for m in group if any(u not in inside for u in m.users)] or group[-1:]
            for m in outputs:
                new_of[m] = new
            params = {traced.params[a.name][len(fqn) + 1:]: mask(a) for m in group for a in m.all_input_nodes
                      if a.name in traced.params and a.name not in traced.buffers
                      and traced.params[a.name].startswith(fqn + ".")}
            infos[new] = NodeInfo(mask(outputs[-1]), params)
        elif node.op == "call_function":
            new = graph.call_function(node.target, fx.node.map_arg(node.args, mapped),
                                      fx.node.map_arg(node.kwargs, mapped))
            new_of[node] = new
            infos[new] = NodeInfo(mask(node))
        elif node.op == "output":
            infos[graph.output(fx.node.map_arg(node.args[0], mapped))] = NodeInfo(None)
    return infos
