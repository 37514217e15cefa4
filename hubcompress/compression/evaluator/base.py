"""What compressors ask of a training loop they do not own: patch the loss, run tasks around
each optimizer step, train extra parameters, stop after a number of steps."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from torch import nn

from ...errors import CompressionError

logger = logging.getLogger(__name__)

LossPatch = Callable[[Any, Any], Any]  # (loss, batch) -> loss
StepTask = Callable[[], None]


@dataclass
class _Handle:
    owner: list
    item: Any

    def remove(self) -> None:
        if self.item in self.owner:
            self.owner.remove(self.item)


class StopTraining(Exception):
    """Raised when a user loop that ignores ``max_steps`` goes on past the last requested
    optimizer step (at its next training step or optimizer step), so it still ends where the
    compressor needs it to. A loop that honours ``max_steps`` never sees it."""


class Evaluator:
    """Base of the evaluators: keeps the patches and counts optimizer steps.

    Subclasses connect ``_before_step`` / ``_after_step`` / ``_patched_loss`` to a real loop.
    """

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self._loss_patches: list[LossPatch] = []
        self._before_step: list[StepTask] = []
        self._after_step: list[StepTask] = []
        self._trainables: list[nn.Parameter] = []
        self.step_count = 0
        self._max_steps: int | None = None
        self._observe_only = False

    @contextlib.contextmanager
    def observe_only(self) -> Iterator[None]:
        """Within this block ``train`` runs the user's loop to *observe* (calibration): the model
        in eval mode, optimizer steps skipped (the step tasks still run, and steps are counted),
        and every parameter and buffer of the model put back afterwards.

        Example:
            >>> ev = Evaluator()
            >>> with ev.observe_only():
            ...     ev.observing
            True
        """
        self._observe_only = True
        try:
            yield
        finally:
            self._observe_only = False

    @property
    def observing(self) -> bool:
        return self._observe_only

    def bind_model(self, model: nn.Module) -> None:
        self.model = model

    def patch_loss(self, patch: LossPatch) -> _Handle:
        """Add ``patch(loss, batch) -> loss`` to the training loss (regularisers, distillation)."""
        self._loss_patches.append(patch)
        return _Handle(self._loss_patches, patch)

    def patch_optimizer_step(self, before: list[StepTask] | None = None,
                             after: list[StepTask] | None = None) -> list[_Handle]:
        """Run tasks right before and right after every optimizer step."""
        handles = []
        for task in before or []:
            self._before_step.append(task)
            handles.append(_Handle(self._before_step, task))
        for task in after or []:
            self._after_step.append(task)
            handles.append(_Handle(self._after_step, task))
        return handles

    def add_trainable(self, params: list[nn.Parameter]) -> _Handle:
        """Train these extra parameters too (slim factors, movement scores, learned scales)."""
        for p in params:
            self._trainables.append(p)
        return _Handle(self._trainables, params)

    # Called by subclasses --------------------------------------------------------------------
    @contextlib.contextmanager
    def _model_restored(self) -> Iterator[None]:
        """While observing, put the model's own tensors back afterwards (a loop that calls
        ``model.train()`` would otherwise move BatchNorm statistics)."""
        if not self._observe_only or self.model is None:
            yield
            return
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            yield
        finally:
            self.model.load_state_dict(saved)

    def _loss(self, loss: Any, batch: Any) -> Any:
        for patch in self._loss_patches:
            loss = patch(loss, batch)
        return loss

    def _run_before_step(self) -> None:
        for task in list(self._before_step):
            task()

    def _run_after_step(self) -> bool:
        """Run the after-step tasks; True when the requested number of steps is reached."""
        self.step_count += 1
        for task in list(self._after_step):
            task()
        return self._steps_done

    @property
    def _steps_done(self) -> bool:
        return self._max_steps is not None and self.step_count >= self._max_steps

    def get_dummy_input(self) -> Any:
        """The ``dummy_input`` given to the evaluator (NNI's name), e.g. for tracing."""
        dummy = getattr(self, "dummy_input", None)
        if dummy is None:
            raise CompressionError(f"{type(self).__name__} was built without a dummy_input; pass one to its "
                                   "constructor.")
        return dummy

    def train(self, max_steps: int | None = None, max_epochs: int | None = None) -> None:
        """Run the user's training for ``max_steps`` optimizer steps (or ``max_epochs``)."""
        raise NotImplementedError

    def evaluate(self) -> Any:
        """Run the user's evaluation function, if any; returns its result."""
        raise NotImplementedError
