"""LinearPruner and AGPPruner: raise another pruner's sparse ratio step by step while training.

The inner pruner keeps measuring between updates: norms of the (masked) weights for Level, L1,
L2 and FPGM; gradients for Taylor; the learned scaling factors, still trained under their L1
penalty, for Slim (whose factors are folded into the weights when training ends)."""

from __future__ import annotations

import logging
from typing import Any

from ...errors import CompressionError, ConfigListError
from ..evaluator.base import Evaluator
from .base import Pruner
from .basic_pruners import _OneShot
from .training_pruners import MovementPruner, _TrainingPruner

logger = logging.getLogger(__name__)


class _ScheduledPruner(Pruner):
    """Drives ``pruner``: every ``interval_steps`` optimizer steps, for ``total_times`` updates,
    its masks are remade at ``final_ratio * schedule(i / total_times)``."""

    needs_training = True

    def __init__(self, pruner: Pruner, interval_steps: int, total_times: int, evaluator: Evaluator | None = None):
        if isinstance(pruner, MovementPruner) or not isinstance(pruner, (_OneShot, _TrainingPruner)):
            raise CompressionError(f"{type(self).__name__} schedules Level, L1, L2, FPGM, Slim or Taylor pruners; "
                                   f"{type(pruner).__name__} has its own schedule or none to drive.")
        if interval_steps < 1 or total_times < 1:
            raise CompressionError("interval_steps and total_times must be positive ints.")
        evaluator = evaluator or pruner.evaluator
        if evaluator is None:
            raise CompressionError(f"{type(self).__name__} prunes while training: pass an evaluator.")
        # Take over the inner pruner's model, wrappers and chain; it keeps measuring.
        self.bound_model = pruner.bound_model
        self.config_list = pruner.config_list
        self.evaluator = evaluator
        self._wrappers = pruner._wrappers
        self._target_spaces = pruner._target_spaces
        self._fused = pruner._fused
        self.inner = pruner
        self.interval_steps = interval_steps
        self.total_times = total_times
        if pruner.evaluator is None:
            pruner.evaluator = evaluator
        evaluator.bind_model(self.bound_model)
        for space in self._spaces():
            if space.sparse_threshold is not None:
                raise ConfigListError(f"{type(self).__name__} schedules sparse_ratio; "
                                      f"{space.wrapper.module_name}.{space.name} uses sparse_threshold.",
                                      index=space.config_index, key="sparse_threshold")
        self._final = {id(s): s.sparse_ratio for s in self._spaces()}
        self._steps = 0
        self._updates = 0
        self._handles: list[Any] = []

    @classmethod
    def from_compressor(cls, *args: Any, **kwargs: Any) -> Pruner:
        raise CompressionError(f"chain the inner pruner instead: inner = TaylorPruner.from_compressor(previous, "
                               f"config_list, ...); then {cls.__name__}(inner, interval_steps, total_times).")

    def schedule(self, progress: float) -> float:
        raise NotImplementedError

    def _default_steps(self) -> int:
        return self.interval_steps * self.total_times

    def _update(self) -> None:
        self._updates += 1
        scale = self.schedule(self._updates / self.total_times)
        for space in self._spaces():
            if self._final.get(id(space)) is not None:
                space.sparse_ratio = self._final[id(space)] * scale
        try:
            self.inner.generate_masks()
        finally:
            for space in self._spaces():
                if self._final.get(id(space)) is not None:
                    space.sparse_ratio = self._final[id(space)]
        if isinstance(self.inner, _TrainingPruner):
            self.inner.reset_collection()
        logger.info("%s: update %d/%d at %.1f%% of the final ratio", type(self).__name__, self._updates,
                    self.total_times, 100 * scale)

    def _on_step(self) -> None:
        self._steps += 1
        if self._steps % self.interval_steps == 0 and self._updates < self.total_times:
            self._update()

    def _start(self) -> None:
        self._steps = self._updates = 0
        if isinstance(self.inner, _TrainingPruner):
            self.inner.scheduled = True
            self.inner._start()
        self._handles = self.evaluator.patch_optimizer_step(after=[self._on_step])

    def _finish(self) -> None:
        for h in self._handles:
            h.remove()
        if self._updates < self.total_times:
            logger.warning("%s: training ended after %d of %d updates; the final masks use the full ratio.",
                           type(self).__name__, self._updates, self.total_times)
            self._updates = self.total_times - 1
            self._update()
        if isinstance(self.inner, _TrainingPruner):
            self.inner._finish()


class LinearPruner(_ScheduledPruner):
    """The ratio grows linearly: ``final * i / total_times`` at update i.

    Example:
        >>> LinearPruner.schedule(None, 0.5)
        0.5
    """

    def schedule(self, progress: float) -> float:
        return progress


class AGPPruner(_ScheduledPruner):
    """Automated gradual pruning (Zhu & Gupta 2017): ``final * (1 - (1 - i / total_times) ** 3)``.

    Example:
        >>> AGPPruner.schedule(None, 0.5)
        0.875
    """

    def schedule(self, progress: float) -> float:
        return 1.0 - (1.0 - progress) ** 3
