"""Pruners that measure importance while the user's training runs: Taylor, Slim, Movement."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ...errors import CompressionError, ConfigListError
from ..compressor import Compressor
from ..distributed import all_reduce_sum_
from ..evaluator.base import Evaluator
from ..wrapper import ModuleWrapper
from .base import Pruner
from .granularity import block_reduce, expand_mask
from .target_space import PruningTargetSpace, register_apply_method

logger = logging.getLogger(__name__)


class _TrainingPruner(Pruner):
    """Collects data during ``training_steps`` optimizer steps, then makes masks once
    (unless a LinearPruner / AGPPruner drives it: then the scheduler calls ``generate_masks``)."""

    needs_training = True

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator,
                 training_steps: int, *, existing_wrappers: dict[str, ModuleWrapper] | None = None):
        if not isinstance(training_steps, int) or training_steps < 1:
            raise CompressionError(f"training_steps must be a positive int, got {training_steps!r}.")
        super().__init__(model, config_list, evaluator, existing_wrappers)
        self.training_steps = training_steps
        self.scheduled = False  # set by a scheduled pruner that drives this one
        self._handles: list[Any] = []
        self._steps = 0
        self._collecting = False

    def _default_steps(self) -> int:
        return self.training_steps

    def _on_step(self) -> None:
        self._steps += 1
        if not self.scheduled and self._collecting and self._steps >= self.training_steps:
            self.generate_masks()
            self._collecting = False

    def _start(self) -> None:
        self._steps = 0
        self._collecting = True
        self._handles += self.evaluator.patch_optimizer_step(after=[self._on_step])

    def _finish(self) -> None:
        if self._collecting and not self.scheduled:
            logger.warning("%s: training stopped after %d of %d steps; masks come from those steps.",
                           type(self).__name__, self._steps, self.training_steps)
            self.generate_masks()
        self._collecting = False
        for h in self._handles:
            h.remove()
        self._handles = []

    def reset_collection(self) -> None:
        """Start collecting afresh (a scheduler calls this after each mask update)."""


class TaylorPruner(_TrainingPruner):
    """First-order Taylor importance: the sum over training steps of ``(target * grad) ** 2``,
    reduced per block. Works on parameters and on activations (``_input_`` / ``_output_``).

    Example:
        >>> # pruner = TaylorPruner(model, config_list, evaluator, training_steps=20)
        >>> # model, masks = pruner.compress()
    """

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator,
                 training_steps: int, *, existing_wrappers: dict[str, ModuleWrapper] | None = None):
        super().__init__(model, config_list, evaluator, training_steps, existing_wrappers=existing_wrappers)
        self._importance: dict[tuple[str, str], torch.Tensor] = {}
        # What the last mask update measured: the final update of a schedule that training cut short
        # right after an update has no new step to measure, and decides on this instead.
        self._measured: dict[tuple[str, str], torch.Tensor] = {}

    @classmethod
    def from_compressor(cls, compressor: Compressor, new_config_list: list[dict[str, Any]], training_steps: int,
                        evaluator: Evaluator | None = None) -> TaylorPruner:
        """NNI's call form: ``TaylorPruner.from_compressor(previous, config_list, training_steps)``."""
        return cls._chain(compressor, new_config_list, evaluator, training_steps=training_steps)

    def _accumulate(self, space: PruningTargetSpace, value: torch.Tensor) -> None:
        key = (space.wrapper.module_name, space.name)
        kernel = self.kernel_of(space)
        if space.is_activation and len(kernel) == 1:  # channel-only: fold the other dims first
            dim = space.layout.activation_dim(value.dim())
            value = value.sum([d for d in range(value.dim()) if d != dim])
        reduced = block_reduce(value.detach().float(), kernel, "sum")
        previous = self._importance.get(key)
        self._importance[key] = reduced if previous is None else previous + reduced

    def _collect_param_grads(self) -> None:
        if not self._collecting:
            return
        for space in self._spaces():
            target = space.target
            if target is not None and isinstance(target, nn.Parameter) and target.grad is not None:
                self._accumulate(space, (self.effective(space) * target.grad.detach()).pow(2))

    def _activation_observer(self, space: PruningTargetSpace):
        def observe(tensor: torch.Tensor) -> None:
            if self._collecting and tensor.requires_grad:
                tensor.register_hook(lambda grad: self._accumulate(space, (tensor.detach() * grad).pow(2)))
        return observe

    def _start(self) -> None:
        super()._start()
        self._handles += self.evaluator.patch_optimizer_step(before=[self._collect_param_grads])
        for space in self._spaces():
            if space.is_activation:
                observer = self._activation_observer(space)
                space.observers.append(observer)
                self._handles.append(_ListHandle(space.observers, observer))

    def reset_collection(self) -> None:
        self._measured, self._importance = self._importance, {}

    def _sync_metric_data(self) -> None:
        # Each rank saw its own batches: sum the importance over ranks (same keys everywhere).
        all_reduce_sum_(self._importance[key] for key in sorted(self._importance))

    def _metric(self, space: PruningTargetSpace, kernel: list[int]) -> torch.Tensor | None:
        key = (space.wrapper.module_name, space.name)
        value = self._importance[key] if key in self._importance else self._measured.get(key)
        if value is None:
            raise CompressionError(
                f"TaylorPruner: no gradient reached {space.wrapper.module_name}.{space.name} during training; "
                "is it used in the forward pass and does the loss depend on it?")
        return value


class _ListHandle:
    def __init__(self, owner: list, item: Any):
        self.owner, self.item = owner, item

    def remove(self) -> None:
        if self.item in self.owner:
            self.owner.remove(self.item)


def _parameters_only(pruner: Pruner, name: str) -> None:
    for space in pruner._spaces():
        if space.is_activation:
            raise ConfigListError(f"{name} learns a factor per block of a parameter; "
                                  f"{space.wrapper.module_name}.{space.name} is an activation. Use TaylorPruner.",
                                  index=space.config_index, key="target_names")


@register_apply_method("slim_mul")
def _slim_mul(t: torch.Tensor, space: PruningTargetSpace) -> torch.Tensor:
    factor = expand_mask(space.slim_factor, space.slim_kernel, t.shape)
    out = t * factor
    return out * space.mask.to(t.dtype) if space.mask is not None else out


class SlimPruner(_TrainingPruner):
    """Network slimming: a learned scaling factor per block (per channel for a BatchNorm
    weight), trained with an L1 penalty ``regular_scale * Σ|factor|``; small factors are pruned.
    At the end the factors are folded into the parameter, so the model computes the same.
    """

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator,
                 training_steps: int, regular_scale: float = 1.0, *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        super().__init__(model, config_list, evaluator, training_steps, existing_wrappers=existing_wrappers)
        _parameters_only(self, "SlimPruner")
        self.regular_scale = regular_scale

    @classmethod
    def from_compressor(cls, compressor: Compressor, new_config_list: list[dict[str, Any]], training_steps: int,
                        regular_scale: float = 1.0, evaluator: Evaluator | None = None) -> SlimPruner:
        """NNI's call form: ``SlimPruner.from_compressor(previous, config_list, training_steps, regular_scale)``."""
        return cls._chain(compressor, new_config_list, evaluator, training_steps=training_steps,
                          regular_scale=regular_scale)

    def _penalty(self, loss: Any, batch: Any) -> Any:
        return loss + self.regular_scale * sum(s.slim_factor.abs().sum() for s in self._active_spaces())

    def _active_spaces(self) -> list[PruningTargetSpace]:
        return [s for s in self._spaces() if getattr(s, "slim_factor", None) is not None]

    def _start(self) -> None:
        super()._start()
        factors = []
        for space in self._spaces():
            if space.sparse_ratio is None and space.sparse_threshold is None and space.dependency_group_id is None:
                continue
            kernel = self.kernel_of(space)
            shape = [s // (s if k == -1 else k) for s, k in zip(space.target.shape, kernel)]
            factor = nn.Parameter(torch.ones(shape, device=space.target.device))
            space.wrapper.register_parameter(f"{space.name}_slim_factor", factor)
            space.slim_factor, space.slim_kernel = factor, kernel
            space.apply_method = "slim_mul"
            factors.append(factor)
        self._handles.append(self.evaluator.add_trainable(factors))
        self._handles.append(self.evaluator.patch_loss(self._penalty))

    def _metric(self, space: PruningTargetSpace, kernel: list[int]) -> torch.Tensor | None:
        metric = space.slim_factor.detach().abs()
        if space.mask is not None:  # under a schedule, a block pruned once stays pruned
            metric = metric * block_reduce(space.mask, kernel, "max").reshape(metric.shape)
        return metric

    def _finish(self) -> None:
        super()._finish()
        with torch.no_grad():
            for space in self._active_spaces():
                target = space.target
                target.mul_(expand_mask(space.slim_factor.detach(), space.slim_kernel, target.shape).to(target.dtype))
                del space.wrapper._parameters[f"{space.name}_slim_factor"]
                space.slim_factor = None
                space.apply_method = "mul"


@register_apply_method("movement_mul")
def _movement_mul(t: torch.Tensor, space: PruningTargetSpace) -> torch.Tensor:
    score = space.movement_score
    gate = space.mask.to(t.dtype) if space.mask is not None else torch.ones_like(t)
    # Forward: t * mask. Backward: the score gets grad * t (straight-through), as in
    # movement pruning (Sanh et al. 2020): weights moving away from zero gain score.
    return t * (gate + score - score.detach())


class MovementPruner(_TrainingPruner):
    """Movement pruning: a score per element learns how far each weight moves away from zero;
    masks keep the highest block scores, recomputed after every step past ``warmup_step``, with
    the ratio rising on a cubic schedule until ``cooldown_begin_step`` and fixed after.
    """

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator,
                 warmup_step: int, cooldown_begin_step: int, regular_scale: float | None = None, *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        if not 0 <= warmup_step < cooldown_begin_step:
            raise CompressionError(f"MovementPruner needs 0 <= warmup_step < cooldown_begin_step, got "
                                   f"{warmup_step} and {cooldown_begin_step}.")
        super().__init__(model, config_list, evaluator, cooldown_begin_step, existing_wrappers=existing_wrappers)
        _parameters_only(self, "MovementPruner")
        if regular_scale is not None:
            logger.warning("MovementPruner: regular_scale only acts in NNI's soft movement mode, which hubcompress "
                           "does not implement (hard top-k masks); it is ignored.")
        for space in self._spaces():
            if space.sparse_threshold is not None:
                raise ConfigListError("MovementPruner schedules sparse_ratio; use sparse_ratio instead of "
                                      "sparse_threshold.", index=space.config_index, key="sparse_threshold")
        self.warmup_step = warmup_step
        self.cooldown_begin_step = cooldown_begin_step
        self._final_ratio = {id(s): s.sparse_ratio for s in self._spaces()}

    @classmethod
    def from_compressor(cls, compressor: Compressor, new_config_list: list[dict[str, Any]], warmup_step: int,
                        cooldown_begin_step: int, regular_scale: float | None = None,
                        evaluator: Evaluator | None = None) -> MovementPruner:
        """NNI's call form: ``MovementPruner.from_compressor(previous, config_list, warmup_step,
        cooldown_begin_step, regular_scale)``."""
        return cls._chain(compressor, new_config_list, evaluator, warmup_step=warmup_step,
                          cooldown_begin_step=cooldown_begin_step, regular_scale=regular_scale)

    def _default_steps(self) -> int:
        return self.cooldown_begin_step

    def current_ratio_scale(self, step: int) -> float:
        if step <= self.warmup_step:
            return 0.0
        if step >= self.cooldown_begin_step:
            return 1.0
        progress = (step - self.warmup_step) / (self.cooldown_begin_step - self.warmup_step)
        return 1.0 - (1.0 - progress) ** 3

    def _start(self) -> None:
        super()._start()
        scores = []
        for space in self._spaces():
            if space.sparse_ratio is None and space.dependency_group_id is None:
                continue
            score = nn.Parameter(torch.zeros_like(space.target, dtype=torch.float32))
            space.wrapper.register_parameter(f"{space.name}_movement_score", score)
            space.movement_score = score
            space.apply_method = "movement_mul"
            scores.append(score)
        self._handles.append(self.evaluator.add_trainable(scores))

    def _on_step(self) -> None:
        self._steps += 1
        scale = self.current_ratio_scale(self._steps)
        if scale > 0:
            self._masks_at(scale)

    def _masks_at(self, scale: float) -> None:
        for space in self._spaces():
            if self._final_ratio.get(id(space)) is not None:
                space.sparse_ratio = self._final_ratio[id(space)] * scale
        try:
            self.generate_masks()
        finally:
            for space in self._spaces():
                if self._final_ratio.get(id(space)) is not None:
                    space.sparse_ratio = self._final_ratio[id(space)]

    def _metric(self, space: PruningTargetSpace, kernel: list[int]) -> torch.Tensor | None:
        return block_reduce(space.movement_score.detach(), kernel, "sum")

    def _finish(self) -> None:
        self._collecting = False
        if self._steps < self.cooldown_begin_step:
            logger.warning("MovementPruner: training stopped at step %d, before cooldown_begin_step %d; "
                           "the final masks use the full sparse_ratio.", self._steps, self.cooldown_begin_step)
            self._masks_at(1.0)
        super()._finish()
        for space in self._spaces():
            if getattr(space, "movement_score", None) is not None:
                del space.wrapper._parameters[f"{space.name}_movement_score"]
                space.movement_score = None
                space.apply_method = "mul"
