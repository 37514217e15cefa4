"""Which prunable layers must lose the same output channels: found by running the model once.

Two layers depend on each other when their outputs meet channel by channel: a residual add, a
product, a concatenation along any dim but the channels, a depthwise convolution (its output
channels are its input channels). Grouped convolutions also need the channels of each group to
be pruned equally, and so do the layers that feed them.

The model runs once on the dummy input under a ``TorchFunctionMode`` that tags every tensor
with the prunable layers whose output channels it still carries (and where its channel dim is),
so Python control flow resolves as it does in real use. A tag survives an op when the output
still has the channel dim at the same place with the same size (activations, norms, pooling,
``mean`` over the spatial dims, ``flatten`` of a ``[B, C, 1, 1]``); it is dropped when the
channels are reduced, reshaped away or concatenated with others.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    ...     def forward(self, x):
    ...         x = self.a(x)
    ...         return x + self.b(x)
    >>> cfg = auto_set_dependency_group_ids(Block(), [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
    ...                                     torch.randn(1, 3, 8, 8))
    >>> [c["op_names"] for c in cfg], cfg[0]["dependency_group_id"] == cfg[1]["dependency_group_id"]
    ([['a'], ['b']], True)
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from ..config.keys import SELECTION_KEYS, translate_nni2
from ..config.selection import compressible_modules, select_modules

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Reductions whose ``dim`` argument may remove the channel dim.
_REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "prod", "norm", "std", "var", "logsumexp",
               "argmax", "argmin", "nansum", "nanmean", "median", "all", "any", "count_nonzero"}


@dataclass(frozen=True)
class _Tag:
    sources: frozenset[str]
    dim: int  # the channel dim: >= 0 counted from the front (convolutions), < 0 from the back
    size: int

    def index(self, ndim: int) -> int:
        return self.dim if self.dim >= 0 else ndim + self.dim


def _is_prunable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Embedding, *_CONV)) or type(module).__name__ == "Conv1D"


def _channel_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, _CONV) else -1


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", "") or ""
    name = name.strip("_")
    return name[:-1] if name.endswith("_") else name


def _reduced_dims(func: Any, args: tuple, kwargs: dict, ndim: int) -> set[int] | None:
    """The dims a reduction removes; None when ``func`` is no reduction or its dims are not
    plain ints (then the output's shape alone decides whether the channel dim survived)."""
    name = _op_name(func)
    if name not in _REDUCTIONS or (len(args) > 1 and isinstance(args[1], torch.Tensor)):
        return None  # not a reduction (``torch.max(a, b)`` is elementwise)
    position = 2 if name == "norm" else 1  # torch.norm(x, p, dim)
    dim = kwargs.get("dim", args[position] if len(args) > position else None)
    if dim is None:
        return set(range(ndim))
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        return None  # e.g. std(x, unbiased): no dims given
    return {d % ndim for d in dims}


class _ChannelTracer(TorchFunctionMode):
    """Tags tensors with the prunable layers they carry; records where tags from different
    inputs meet in one output (a dependency)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[int, _Tag] = {}
        self.loose: dict[int, frozenset[str]] = {}  # nearest prunable layers upstream, through anything
        self.alive: list[torch.Tensor] = []  # keeps ids unique while tracing
        self.meetings: list[frozenset[str]] = []

    def tag(self, tensor: torch.Tensor, tag: _Tag | None, loose: frozenset[str]) -> None:
        self.alive.append(tensor)
        if tag is None:
            self.tags.pop(id(tensor), None)
        else:
            self.tags[id(tensor)] = tag
        self.loose[id(tensor)] = loose

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        tagged = [(t, self.tags[id(t)]) for t in inputs if id(t) in self.tags]
        loose = frozenset().union(*(self.loose.get(id(t), frozenset()) for t in inputs))
        if not tagged and not loose:
            return out
        first = inputs[0] if inputs else None
        for o in tree_leaves(out):
            if not isinstance(o, torch.Tensor):
                continue
            kept = []
            for t, tag in tagged:
                i = tag.index(o.dim())
                if not 0 <= i < o.dim() or o.shape[i] != tag.size:
                    continue
                reduced = _reduced_dims(func, args, kwargs, t.dim()) if t is first else None
                if reduced is not None and tag.index(t.dim()) in reduced:
                    continue
                kept.append((t, tag))
            if len({id(t) for t, _ in kept}) > 1:
                self.meetings.append(frozenset().union(*(tag.sources for _, tag in kept)))
            new = _Tag(frozenset().union(*(tag.sources for _, tag in kept)), kept[0][1].dim, kept[0][1].size) \
                if kept else None
            self.tag(o, new, loose)
        return out


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, names: set[str] | frozenset[str]) -> None:
        names = list(names)
        for other in names[1:]:
            self.parent[self.find(other)] = self.find(names[0])

    def sets(self) -> list[set[str]]:
        groups: dict[str, set[str]] = {}
        for x in self.parent:
            groups.setdefault(self.find(x), set()).add(x)
        return list(groups.values())


def _run(model: nn.Module, dummy_input: Any, hook: Any) -> None:
    training = model.training
    model.eval()  # no BatchNorm statistics move, no dropout
    try:
        with torch.no_grad():
            if isinstance(dummy_input, dict):
                model(**dummy_input)
            elif isinstance(dummy_input, (tuple, list)):
                model(*dummy_input)
            else:
                model(dummy_input)
    finally:
        model.train(training)
        hook()


def find_dependencies(model: nn.Module, dummy_input: Any) -> tuple[list[set[str]], dict[str, int]]:
    """Run ``model`` on ``dummy_input`` (a tensor, a tuple of positional inputs, or a dict of
    keyword inputs) and return ``(channel_sets, group_blocks)``: the sets of layers that must
    lose the same output channels (sets of two or more), and for the layers whose channels must
    be pruned per group, how many equal blocks (the lcm of the groups they feed or have).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 3, groups=8))
        >>> sets, blocks = find_dependencies(net, torch.randn(1, 3, 8, 8))
        >>> [sorted(s) for s in sets], blocks  # '2' is depthwise; '1' has 2 groups, which '0' feeds
        ([['1', '2']], {'0': 2, '1': 2})
    """
    names = {module: name for name, module in compressible_modules(model).items()}
    tracer = _ChannelTracer()
    meetings: list[frozenset[str]] = []
    groups: dict[str, list[int]] = {}
    handles = []

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        name = names[module]
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        parents = frozenset().union(*(tracer.loose.get(id(t), frozenset()) for t in inputs))
        if isinstance(module, _CONV) and module.groups > 1:
            if module.groups == module.out_channels:  # depthwise: its channels are its input's
                meetings.append(parents | {name})
            else:
                groups.setdefault(name, []).append(module.groups)
                for parent in parents:
                    groups.setdefault(parent, []).append(module.groups)
        elif isinstance(module, nn.GroupNorm) and module.num_groups > 1:
            if module.num_groups == module.num_channels:
                meetings.append(parents | {name})
            else:
                groups.setdefault(name, []).append(module.num_groups)
                for parent in parents:
                    groups.setdefault(parent, []).append(module.num_groups)

    def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        name = names[module]
        for o in tree_leaves(output):
            if isinstance(o, torch.Tensor):
                dim = _channel_dim(module)
                i = dim if dim >= 0 else o.dim() + dim
                tag = _Tag(frozenset({name}), dim, o.shape[i]) if 0 <= i < o.dim() else None
                tracer.tag(o, tag, frozenset({name}))

    for module, name in names.items():
        if isinstance(module, (*_CONV, nn.GroupNorm)):
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        if _is_prunable(module):
            handles.append(module.register_forward_hook(after, with_kwargs=True))

    def remove() -> None:
        for h in handles:
            h.remove()

    with tracer:
        _run(model, dummy_input, remove)
    union = _UnionFind()
    for names_met in tracer.meetings + meetings:
        union.union(names_met)
    sets = sorted((s for s in union.sets() if len(s) > 1), key=lambda s: sorted(s))
    blocks = {name: math.lcm(*groups[name]) for name in names.values()
              if name in groups and math.lcm(*groups[name]) > 1}
    return sets, blocks


def auto_set_dependency_group_ids(model: nn.Module, config_list: list[dict[str, Any]],
                                  dummy_input: Any) -> list[dict[str, Any]]:
    """NNI's ``auto_set_denpendency_group_ids``: a config list with one config per selected
    module (``op_names: [name]`` plus the config's other keys), where layers that must lose the
    same channels share a ``dependency_group_id`` (replacing one the config set) and layers pruned
    per group get ``internal_metric_block``. Ids are stable: the same model gives the same ids.
    """
    sets, blocks = find_dependencies(model, dummy_input)
    group_of = {}
    for members in sets:
        digest = hashlib.sha1(",".join(sorted(members)).encode()).hexdigest()[:12]
        group_of.update({name: f"auto-{digest}" for name in members})
    modules = compressible_modules(model)
    out = []
    for index, config in enumerate(translate_nni2(list(config_list))):
        shared = {k: copy.deepcopy(v) for k, v in config.items() if k not in SELECTION_KEYS}
        for name in select_modules(index, config, modules):
            entry = {"op_names": [name], **copy.deepcopy(shared)}
            if name in group_of:
                entry["dependency_group_id"] = group_of[name]
            if name in blocks:
                entry["internal_metric_block"] = blocks[name]
            out.append(entry)
    return out


# NNI's spelling, so ``from nni.compression.utils import auto_set_denpendency_group_ids`` ports.
auto_set_denpendency_group_ids = auto_set_dependency_group_ids
