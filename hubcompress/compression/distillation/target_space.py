"""The distillation view of one student target: its keys, and the value recorded each forward;
plus reading the same target out of a teacher module's call, and the frozen teacher copy."""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

from ...errors import CompressionError, ConfigListError
from ..config.canonical import TargetConfig, register_kind_checks
from ..config.selection import WRAPPER_ATTR
from ..config.target_names import TargetRef, forward_arg_names
from ..wrapper import TargetSpace
from .losses import DISTILL_LOSSES


class DistillationTargetSpace(TargetSpace):
    """Records the target's value (with its graph) on every forward while ``recording``; it
    runs after quantization and masking, so the student is distilled as it really computes."""

    def __init__(self, wrapper: Any, config: TargetConfig, layout: Any):
        super().__init__(wrapper, config, layout)
        self.lambda_: float = float(self.setting.get("lambda", 1.0))
        self.link: str | list[str] = self.setting.get("link") or "auto"
        self.apply_method: str = self.setting.get("apply_method") or "mse"
        self.temperature: float = float(self.setting.get("temperature") or 2.0)
        self.recording = False
        self.value: torch.Tensor | None = None
        self.last_shape: tuple[int, ...] | None = None

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        self.last_shape = tuple(tensor.shape)
        if self.recording:
            self.value = tensor
        return tensor


def select_output(output: Any, ref: TargetRef, where: str) -> torch.Tensor:
    """The tensor ``ref`` names in a module's return value (tensor, tuple, dict or ModelOutput)."""
    value: Any = None
    if isinstance(output, torch.Tensor):
        value = output if ref.position == 0 else None
    elif ref.key is not None and isinstance(output, Mapping) and ref.key in output.keys():
        value = output[ref.key]
    elif ref.position is not None and isinstance(output, (tuple, list)) and ref.position < len(output):
        value = output[ref.position]
    elif ref.position is not None and isinstance(output, Mapping) and ref.position < len(output):
        value = output[list(output.keys())[ref.position]]
    if not isinstance(value, torch.Tensor):
        raise CompressionError(f"teacher target {where}: the module returned a {type(output).__name__} in which "
                               f"{ref.name!r} is not a tensor; name a position or key that holds one.")
    return value


def select_input(module: nn.Module, args: tuple, kwargs: dict, ref: TargetRef, where: str) -> torch.Tensor:
    """The tensor ``ref`` (an ``_input_*`` target) names among a call's arguments."""
    names = forward_arg_names(module)
    key = ref.key if ref.key is not None else (names[ref.position] if ref.position < len(names) else None)
    value = args[ref.position] if ref.position is not None and ref.position < len(args) else kwargs.get(key)
    if not isinstance(value, torch.Tensor):
        raise CompressionError(f"teacher target {where}: argument {ref.name!r} is a {type(value).__name__}, "
                               "not a tensor.")
    return value


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` as it is without compression: wrappers (masks, fake-quant)
    are stripped from the copy, so a distiller chained after a pruner gets the original."""
    teacher = copy.deepcopy(model)
    for module in list(teacher.modules()):
        wrapper = module._modules.get(WRAPPER_ATTR)
        if wrapper is not None:
            wrapper.unwrap()
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def default_teacher_predict(batch: Any, teacher: nn.Module) -> Any:
    """Call the teacher on a batch: a dict without its labels (transformers), the first item
    of a tuple / list (PyTorch loaders), or the batch itself."""
    if isinstance(batch, Mapping):
        return teacher(**{k: v for k, v in batch.items() if k not in ("labels", "label", "start_positions",
                                                                     "end_positions")})
    if isinstance(batch, (tuple, list)):
        return teacher(batch[0])
    return teacher(batch)


def _check_distill_target(target: TargetConfig, module: nn.Module) -> None:
    s = target.setting
    where = f"{target.module_name}.{target.target_name}"
    if not target.ref.is_activation:
        raise ConfigListError(f"{where}: distillation compares activations; name an _output_* or _input_* target.",
                              index=target.config_index, key="target_names")
    if s.get("apply_method", "mse") not in DISTILL_LOSSES:
        raise ConfigListError(f"{where}: unknown apply_method {s['apply_method']!r}; use one of "
                              f"{sorted(DISTILL_LOSSES)}.", index=target.config_index, key="apply_method")
    if s.get("lambda") is not None and s["lambda"] < 0:
        raise ConfigListError(f"{where}: lambda must be >= 0, got {s['lambda']}.", index=target.config_index,
                              key="lambda")


def _is_active(setting: dict[str, Any], config: dict[str, Any]) -> bool:
    return bool(setting.get("lambda", 1.0))


register_kind_checks("distillation", _check_distill_target, _is_active)
