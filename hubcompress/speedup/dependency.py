"""Dependency groups for a config list: layers whose output channels speedup must keep in step
(both sides of a residual add, a depthwise convolution and the layer feeding it, a
squeeze-and-excitation gate and the channels it scales) get one ``dependency_group_id``, so the
pruner gives them one shared mask and speedup removes all of it. NNI 3.0's
``auto_set_denpendency_group_ids`` (its spelling kept as an alias), found from the same ties
speedup uses; it also aligns each BatchNorm to the layer it normalises, so a masked channel is
zero after the norm rather than its shift.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..compression.config.selection import compressible_modules, select_modules
from .coupling import MASK_UPDATERS, Coupler
from .tracing import normalise_dummy_input, trace

_OUT_DIM = {"Linear": 0, "Conv1d": 0, "Conv2d": 0, "Conv3d": 0, "ConvTranspose1d": 1, "ConvTranspose2d": 1,
            "ConvTranspose3d": 1, "Conv1D": 1}
_NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


class _Components:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, a: Any) -> Any:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def join(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)


def channel_groups(model: nn.Module, dummy_input: Any) -> dict[str, str]:
    """Module name -> the name of one module of its group, for every Linear / convolution /
    BatchNorm whose output channels are tied to another's (groups of one are left out)."""
    traced = trace(model, dummy_input)
    shapes = {n: tuple(v.shape) for n, v in traced.values.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()}
    keep = {(n, d): torch.zeros(s[d], dtype=torch.bool) for n, s in shapes.items() for d in range(len(s))}
    coupler = Coupler(shapes, keep)
    for node in traced.graph.nodes:
        if node.op == "call_function" and (node.target in MASK_UPDATERS):
            MASK_UPDATERS[node.target](node, coupler)
    components = _Components()
    for a, b in coupler.edges:
        components.join(a, b)
    modules = dict(model.named_modules())
    refs: dict[str, Any] = {}
    for node_name, fqn in traced.params.items():
        owner, _, pname = fqn.rpartition(".")
        kind = type(modules.get(owner)).__name__
        if pname == "weight" and (kind in _OUT_DIM or kind in _NORMS) and node_name in shapes:
            refs[owner] = components.find((node_name, _OUT_DIM.get(kind, 0)))
    by_root: dict[Any, list[str]] = {}
    for name, root in refs.items():
        by_root.setdefault(root, []).append(name)
    return {name: members[0] for members in by_root.values() if len(members) > 1 for name in members}


def auto_set_dependency_group_ids(model: nn.Module, config_list: list[dict[str, Any]], dummy_input: Any, *,
                                  align_batch_norms: bool = True) -> list[dict[str, Any]]:
    """A config list where each selected module has its own config, with a shared
    ``dependency_group_id`` for modules whose output channels must stay in step, and (with
    ``align_batch_norms``) each BatchNorm after a selected module aligned to its mask.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Residual(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.a, self.b, self.bn = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        ...     def forward(self, x):
        ...         return self.bn(self.a(x)) + self.b(x)
        >>> configs = auto_set_dependency_group_ids(Residual(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
        ...                                         torch.randn(1, 3, 4, 4))
        >>> [c["op_names"] for c in configs], configs[0]["dependency_group_id"] == configs[1]["dependency_group_id"]
        ([['a'], ['b'], ['bn']], True)
    """
    was_training = model.training
    model.eval()  # the graph speedup will see; and no BatchNorm statistics change
    try:
        return _with_groups(model, config_list, dummy_input, align_batch_norms)
    finally:
        model.train(was_training)


def _with_groups(model: nn.Module, config_list: list[dict[str, Any]], dummy_input: Any,
                 align_batch_norms: bool) -> list[dict[str, Any]]:
    groups = channel_groups(model, dummy_input)
    modules = compressible_modules(model)
    out: list[dict[str, Any]] = []
    selected: list[str] = []
    for index, config in enumerate(config_list):
        shared = {k: copy.deepcopy(v) for k, v in config.items() if k not in ("op_types", "op_names", "op_names_re")
                  and not k.startswith("exclude_")}
        for name in select_modules(index, config, modules):
            item = {"op_names": [name], **copy.deepcopy(shared)}
            if name in groups:
                item["dependency_group_id"] = f"channels:{groups[name]}"
            out.append(item)
            selected.append(name)
    if align_batch_norms:
        out.extend(_aligned_norms(model, dummy_input, selected))
    return out


def _aligned_norms(model: nn.Module, dummy_input: Any, selected: list[str]) -> list[dict]:
    """One align config per affine BatchNorm that reads a selected module's output directly,
    unless a config already names it."""
    chosen = set(selected)
    configs = []
    for norm, producer in _norm_inputs(model, dummy_input).items():
        if producer not in chosen or norm in chosen:
            continue
        dim = _OUT_DIM[type(model.get_submodule(producer)).__name__]
        configs.append({"op_names": [norm], "target_names": ["weight", "bias"],
                        "target_settings": {"weight": {"align": {"module_name": producer, "target_name": "weight",
                                                                 "dims": [dim]}}}})
    return configs


def _norm_inputs(model: nn.Module, dummy_input: Any) -> dict[str, str | None]:
    """Affine BatchNorms, each with the module whose output it reads directly (or None)."""
    names = {id(m): n for n, m in model.named_modules()}
    norms = {n for n, m in model.named_modules() if type(m).__name__ in _NORMS and getattr(m, "affine", False)}
    read: dict[str, str | None] = {}
    made: dict[int, tuple[str, torch.Tensor]] = {}  # output id -> (module, output kept alive)

    def remember(module: nn.Module, args: tuple, output: Any) -> None:
        name = names[id(module)]
        if name in norms and args and isinstance(args[0], torch.Tensor):
            read[name] = made.get(id(args[0]), (None, None))[0]
        if isinstance(output, torch.Tensor):
            made[id(output)] = (name, output)

    hooks = [m.register_forward_hook(remember) for m in model.modules()
             if type(m).__name__ in _OUT_DIM or type(m).__name__ in _NORMS]
    try:
        args, kwargs = normalise_dummy_input(dummy_input)
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return read


auto_set_denpendency_group_ids = auto_set_dependency_group_ids  # NNI 3.0's spelling
__all__ = ["auto_set_denpendency_group_ids", "auto_set_dependency_group_ids", "channel_groups"]
