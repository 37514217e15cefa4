"""Module fusion for quantization (``fuse_names``): (conv, bn), (conv, bn, relu), (conv, relu),
(linear, bn1d), (linear, bn1d, relu), (linear, relu), (bn, relu).

The module tree stays as it is while compressing. The leader computes the whole tuple: its
weight (and bias) are folded with the BatchNorm's running statistics before fake-quantization,
a bias it lacks is added to its output, and a ReLU is applied before its ``_output_`` is
quantized. Each follower, when fed the output of the module before it in the tuple, passes it
through. BatchNorm is folded as at inference: its statistics stay frozen while fused.

Example:
    >>> from torch import nn
    >>> match_pattern([nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()])
    ('conv', 'bn', 'relu')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...errors import ConfigListError
from ..config.keys import closest
from ..wrapper import ModuleWrapper

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# role name -> does a module play it
ROLES: dict[str, Callable[[nn.Module], bool]] = {
    "conv": lambda m: isinstance(m, _CONVS),
    "linear": lambda m: isinstance(m, nn.Linear),
    "bn": lambda m: isinstance(m, _BNS),
    "bn1d": lambda m: isinstance(m, nn.BatchNorm1d),
    "relu": lambda m: isinstance(m, nn.ReLU),
}
FUSION_PATTERNS: list[tuple[str, ...]] = []


def register_fusion_pattern(*roles: str) -> None:
    """Allow another tuple of roles (names in ``ROLES``) in ``fuse_names``."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown roles {unknown}; add them to ROLES first")
    FUSION_PATTERNS.append(tuple(roles))


for _pattern in (("conv", "bn"), ("conv", "bn", "relu"), ("conv", "relu"), ("linear", "bn1d"),
                 ("linear", "bn1d", "relu"), ("linear", "relu"), ("bn", "relu")):
    register_fusion_pattern(*_pattern)


def match_pattern(modules: Sequence[nn.Module]) -> tuple[str, ...] | None:
    """The registered pattern the modules play, in order, or None."""
    for pattern in FUSION_PATTERNS:
        if len(pattern) == len(modules) and all(ROLES[r](m) for r, m in zip(pattern, modules)):
            return pattern
    return None


@dataclass
class Fusion:
    """One fused tuple; the leader's wrapper holds it and calls ``transform_output``."""

    names: tuple[str, ...]
    leader: nn.Module
    bn: nn.Module | None  # folded into a conv / linear leader
    relu: bool
    channel_dim: int  # the channel dim of the leader's output
    bias_folded: bool = False  # the leader's bias target folds its bias itself

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel ``(scale, shift)``: ``bn(y) = y * scale + shift`` with running statistics."""
        bn = self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            scale = bn.weight * scale
        shift = -bn.running_mean * scale
        if bn.affine:
            shift = shift + bn.bias
        return scale, shift

    def fold_weight(self, weight: torch.Tensor) -> torch.Tensor:
        if self.bn is None:
            return weight
        scale, _ = self.factors()
        return weight * scale.reshape([-1] + [1] * (weight.dim() - 1)).to(weight.dtype)

    def fold_bias(self, bias: torch.Tensor | None) -> torch.Tensor:
        scale, shift = self.factors()
        return shift if bias is None else bias * scale + shift

    def transform_output(self, output: torch.Tensor) -> torch.Tensor:
        if self.bn is not None and not self.bias_folded:
            bias = self.leader.bias if isinstance(getattr(self.leader, "bias", None), torch.Tensor) else None
            extra = self.fold_bias(bias) - (bias if bias is not None else 0)
            if self.channel_dim != -1:
                extra = extra.reshape([-1] + [1] * (output.dim() - self.channel_dim - 1))
            output = output + extra.to(output.dtype)
        return torch.relu(output) if self.relu else output


def build_fusions(model: nn.Module, config_list: list[dict[str, Any]], quant_targets: dict[str, dict[str, Any]],
                  wrappers: dict[str, ModuleWrapper]) -> list[Fusion]:
    """Check every ``fuse_names`` tuple against the model and the config, and wire it up.

    ``quant_targets`` maps module name -> {target name: quantization target space}.
    """
    modules = dict(model.named_modules())
    fusions: list[Fusion] = []
    claimed: dict[str, int] = {}
    for index, config in enumerate(config_list):
        for names in config.get("fuse_names") or []:
            names = tuple(names)
            fusions.append(_one_fusion(index, names, modules, quant_targets, claimed))
    for fusion in fusions:
        _wire(fusion, modules, quant_targets, wrappers)
    return fusions


def _one_fusion(index: int, names: tuple[str, ...], modules: dict[str, nn.Module],
                quant_targets: dict[str, dict[str, Any]], claimed: dict[str, int]) -> Fusion:
    def fail(message: str) -> ConfigListError:
        return ConfigListError(f"fuse_names {list(names)}: {message}", index=index, key="fuse_names")

    if len(names) < 2:
        raise fail("a fusion needs a leader and at least one follower.")
    for name in names:
        if name not in modules or not name:
            near = closest(name, [n for n in modules if n])
            raise fail(f"no module named {name!r}." + (f" Closest module names: {near}." if near else ""))
        if name in claimed:
            raise fail(f"{name!r} is already fused by config_list[{claimed[name]}]; a module joins one fusion.")
    members = [modules[n] for n in names]
    pattern = match_pattern(members)
    if pattern is None:
        types = [type(m).__name__ for m in members]
        raise fail(f"the modules are {types}, which is no supported fusion; supported: {FUSION_PATTERNS}. "
                   "A tuple lists modules that run back to back, leader first.")
    leader_name = names[0]
    leader_targets = quant_targets.get(leader_name, {})
    if not leader_targets:
        raise fail(f"the leader {leader_name!r} is not quantized by this config list; select it in this config "
                   "(op_names) with a quant_dtype.")
    for name in names[1:]:
        if quant_targets.get(name):
            own = sorted({s.config_index for s in quant_targets[name].values()})
            raise fail(f"the follower {name!r} has its own quantization config (config_list{own}); fused followers "
                       "take none: the leader's _output_ covers them. Exclude it from that config.")
    bn = members[1] if len(pattern) > 1 and pattern[1] in ("bn", "bn1d") else None
    if bn is not None:
        leader = members[0]
        width = leader.out_channels if isinstance(leader, _CONVS) else leader.out_features
        if bn.num_features != width:
            raise fail(f"{leader_name!r} has {width} output channels and {names[1]!r} normalises {bn.num_features}.")
        if isinstance(leader, _CONVS) and _CONVS.index(type(leader)) != _BNS.index(type(bn)):
            raise fail(f"{type(leader).__name__} is followed by {type(bn).__name__}; the dims must agree.")
        if "weight" not in leader_targets:
            raise fail(f"folding {names[1]!r} changes {leader_name!r}'s weight: quantize its weight too "
                       "(a quant_dtype for target 'weight').")
    for name in names:
        claimed[name] = index
    channel_dim = 1 if isinstance(members[0], _CONVS) else -1  # only used to add a folded bias
    return Fusion(names, members[0], bn, pattern[-1] == "relu", channel_dim)


def _wire(fusion: Fusion, modules: dict[str, nn.Module], quant_targets: dict[str, dict[str, Any]],
          wrappers: dict[str, ModuleWrapper]) -> None:
    leader_name = fusion.names[0]
    spaces = quant_targets[leader_name]
    if fusion.bn is not None:
        spaces["weight"].fold = fusion.fold_weight
        if "bias" in spaces:
            spaces["bias"].fold = fusion.fold_bias
            fusion.bias_folded = True
    previous = wrappers[leader_name]
    previous.fusion = fusion
    for name in fusion.names[1:]:
        previous.track_output = True
        wrapper = wrappers.get(name)
        if wrapper is None:
            wrapper = wrappers[name] = ModuleWrapper(modules[name], name)
            wrapper.wrap()
        wrapper.fused_source = previous
        wrapper.fused_strict = ROLES["bn"](modules[name])
        previous = wrapper


def bake_fusion(model: nn.Module, fusion: Fusion) -> None:
    """Write a fused tuple into an *unwrapped* model: BatchNorm folded into the leader's weight
    and bias, the BatchNorm replaced by ``nn.Identity`` (a ReLU stays: quantizing before or after
    it gives the same numbers, since zero is exact on the grid)."""
    if fusion.bn is None:
        return
    leader = fusion.leader
    with torch.no_grad():
        bias = leader.bias if isinstance(leader.bias, torch.Tensor) else None
        new_bias = fusion.fold_bias(bias).detach().clone() if not fusion.bias_folded else None
        if new_bias is not None:
            if bias is None:
                leader.bias = nn.Parameter(new_bias)
            else:
                bias.copy_(new_bias)
    parent_name, _, child = fusion.names[1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
