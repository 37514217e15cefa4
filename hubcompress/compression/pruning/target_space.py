"""The pruning view of one target: its keys, its mask, and how the mask is applied."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...errors import ConfigListError
from ..config.canonical import TargetConfig, register_kind_checks
from ..wrapper import TargetSpace
from .granularity import GranularityError, resolve_kernel

# apply_method name -> fn(tensor, space) -> tensor. Pruners add their training-time variants.
APPLY_METHODS: dict[str, Callable[[torch.Tensor, "PruningTargetSpace"], torch.Tensor]] = {}


def register_apply_method(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        APPLY_METHODS[name] = fn
        return fn
    return deco


@register_apply_method("mul")
def _mul(t: torch.Tensor, space: PruningTargetSpace) -> torch.Tensor:
    return t * space.mask_for(t)


@register_apply_method("add")
def _add(t: torch.Tensor, space: PruningTargetSpace) -> torch.Tensor:
    # A large finite negative (not -inf): softmax then gives exactly 0 to masked positions and
    # a row that is masked entirely stays finite. Half of the dtype's min cannot overflow.
    negative = torch.finfo(t.dtype).min / 2 if t.is_floating_point() else -(2**30)
    return t + (1 - space.mask_for(t)) * negative


@register_apply_method("bypass")
def _bypass(t: torch.Tensor, space: PruningTargetSpace) -> torch.Tensor:
    return t


class PruningTargetSpace(TargetSpace):
    """Setting and mask of one pruning target. The mask is a non-persistent buffer of the
    wrapper, so it follows ``model.to()`` and leaves the state dict alone."""

    def __init__(self, wrapper: Any, config: TargetConfig, layout: Any):
        super().__init__(wrapper, config, layout)
        self._buffer_name = f"{self.name}_mask"
        self.apply_method: str = self.setting.get("apply_method") or "mul"
        self.observers: list[Callable[[torch.Tensor], None]] = []

    # Keys, read-only views of the setting (the scheduled pruners change sparse_ratio).
    def _key(name: str) -> property:  # noqa: N805 - a property factory used in the class body
        return property(lambda self: self.setting.get(name),
                        lambda self, value: self.setting.__setitem__(name, value))

    sparse_ratio = _key("sparse_ratio")
    sparse_threshold = _key("sparse_threshold")
    max_sparse_ratio = _key("max_sparse_ratio")
    min_sparse_ratio = _key("min_sparse_ratio")
    global_group_id = _key("global_group_id")
    dependency_group_id = _key("dependency_group_id")
    internal_metric_block = _key("internal_metric_block")
    granularity = _key("granularity")
    align = _key("align")
    del _key

    @property
    def mask(self) -> torch.Tensor | None:
        return self.wrapper._buffers.get(self._buffer_name)

    @mask.setter
    def mask(self, value: torch.Tensor | None) -> None:
        if value is None:
            self.wrapper._buffers.pop(self._buffer_name, None)
            return
        target = self.target
        if target is not None and tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"mask for {self.wrapper.module_name}.{self.name} has shape {tuple(value.shape)}, "
                             f"the target has {tuple(target.shape)}")
        device = target.device if target is not None else None
        self.wrapper.register_buffer(self._buffer_name, value.detach().to(device=device, dtype=torch.float32),
                                     persistent=False)

    def mask_for(self, t: torch.Tensor) -> torch.Tensor:
        """The mask laid out to broadcast over ``t``. A per-channel activation mask is one value
        per channel (the activation's rank is unknown until it runs); on a channels-first
        activation (a conv's or BatchNorm's ``[batch, C, H, W]``) it goes along dim 1."""
        mask = self.mask.to(t.dtype)
        if self.is_activation and mask.dim() == 1 and t.dim() > 1:
            dim = self.layout.activation_dim(t.dim())
            mask = mask.reshape([-1 if d == dim else 1 for d in range(t.dim())])
        return mask

    def kernel(self, shape: Sequence[int], element_default: bool = False) -> list[int]:
        try:
            return resolve_kernel(self.granularity or "default", shape, is_activation=self.is_activation,
                                  out_dim=self.layout.out_dim, in_dim=self.layout.in_dim,
                                  element_default=element_default)
        except GranularityError as exc:
            raise ConfigListError(f"{self.wrapper.module_name}.{self.name}: {exc}.",
                                  index=self.config_index, key="granularity") from None

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        method = APPLY_METHODS[self.apply_method]
        if self.mask is None and self.apply_method in ("mul", "add"):
            out = tensor
        else:
            out = method(tensor, self)
        for observe in self.observers:
            observe(out)
        return out


def _check_pruning_target(target: TargetConfig, module: nn.Module) -> None:
    s = target.setting
    where = f"{target.module_name}.{target.target_name}"
    if s.get("sparse_ratio") is not None and s.get("sparse_threshold") is not None:
        raise ConfigListError(f"{where} gets both sparse_ratio and sparse_threshold; keep one.",
                              index=target.config_index, key="sparse_threshold")
    lo, hi = s.get("min_sparse_ratio"), s.get("max_sparse_ratio")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigListError(f"{where}: min_sparse_ratio {lo} > max_sparse_ratio {hi}.",
                              index=target.config_index, key="min_sparse_ratio")
    if s.get("apply_method", "mul") not in APPLY_METHODS:
        raise ConfigListError(f"{where}: unknown apply_method {s.get('apply_method')!r}; use mul, add or bypass.",
                              index=target.config_index, key="apply_method")
    if not target.ref.is_activation and s.get("granularity") not in (None, "default"):
        from ..config.templates import PruningSetting

        layout = PruningSetting.layout(type(module).__name__)
        try:
            resolve_kernel(s["granularity"], getattr(module, target.target_name).shape, is_activation=False,
                           out_dim=layout.out_dim, in_dim=layout.in_dim)
        except GranularityError as exc:
            raise ConfigListError(f"{where}: {exc}.", index=target.config_index, key="granularity") from None


def _is_active(setting: dict[str, Any], config: dict[str, Any]) -> bool:
    # A template's default align (bias follows weight) does not count: only one the config asks for.
    asked_align = "align" in config or any("align" in (s or {}) for s in (config.get("target_settings") or {}).values())
    return (setting.get("sparse_ratio") is not None or setting.get("sparse_threshold") is not None
            or setting.get("dependency_group_id") is not None or (asked_align and bool(setting.get("align"))))


register_kind_checks("pruning", _check_pruning_target, _is_active)
