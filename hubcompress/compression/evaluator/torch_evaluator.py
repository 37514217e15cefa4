"""The evaluator for a plain PyTorch training function (NNI's ``TorchEvaluator``)."""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from ...errors import CompressionError
from .base import Evaluator, StopTraining

logger = logging.getLogger(__name__)


class TorchEvaluator(Evaluator):
    """Runs ``training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs)``.

    ``training_step(batch, model, *args, **kwargs) -> loss`` is handed to the training function
    with the compressors' loss patches applied; the hooks around ``optimizer.step()`` are
    torch's own step hooks on the first optimizer. A training function that honours
    ``max_steps`` runs to its own end (its last ``zero_grad``, ``lr_scheduler.step()``, logging
    and return included); one that ignores it is stopped when it goes past ``max_steps``: at its
    next call of ``training_step`` (before any forward) or of ``optimizer.step()`` (before
    any update).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(4, 2)
        >>> def training_step(batch, model):
        ...     x, y = batch
        ...     return nn.functional.cross_entropy(model(x), y)
        >>> def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        ...     for _ in range(max_steps or 1):
        ...         loss = training_step((torch.randn(8, 4), torch.randint(0, 2, (8,))), model)
        ...         optimizers.zero_grad(); loss.backward(); optimizers.step()
        >>> ev = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=0.1), training_step)
        >>> ev.bind_model(model); ev.train(max_steps=3); ev.step_count
        3
    """

    def __init__(self, training_func: Callable[..., Any], optimizers: torch.optim.Optimizer | list,
                 training_step: Callable[..., Any], lr_schedulers: Any = None, dummy_input: Any = None,
                 evaluating_func: Callable[[torch.nn.Module], Any] | None = None):
        super().__init__()
        self.training_func = training_func
        self.optimizers = optimizers
        self.training_step = training_step
        self.lr_schedulers = lr_schedulers
        self.dummy_input = dummy_input
        self.evaluating_func = evaluating_func
        first = optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers
        if not isinstance(first, torch.optim.Optimizer):
            raise CompressionError(
                f"TorchEvaluator needs a torch.optim.Optimizer (or a list of them), got {type(first).__name__}. "
                "Create the optimizer on the model's parameters before building the evaluator.")
        self._optimizer = first

    def _patched_training_step(self, batch: Any, model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self._steps_done:  # a loop going past max_steps: stop it before it runs another batch
            raise StopTraining
        if self._observe_only:
            model.eval()  # calibration sees inference behaviour (no dropout, frozen BN statistics)
        return self._loss(self.training_step(batch, model, *args, **kwargs), batch)

    def _observe_step(self, optimizer: torch.optim.Optimizer) -> Callable[..., None]:
        def step(*args: Any, **kwargs: Any) -> None:  # runs the step tasks, updates nothing
            if optimizer is self._optimizer and self._steps_done:
                raise StopTraining
            optimizer.zero_grad(set_to_none=True)
            if optimizer is self._optimizer:
                self._run_before_step()
                self._run_after_step()
        return step

    def _pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._steps_done:  # one step more than asked for: stop before it updates anything
            raise StopTraining
        self._run_before_step()

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._run_after_step()

    def train(self, max_steps: int | None = None, max_epochs: int | None = None) -> None:
        if self.model is None:
            raise CompressionError("the evaluator has no model: a compressor binds it; call bind_model(model).")
        self._max_steps = max_steps
        self.step_count = 0
        added = self._add_trainables_to_optimizer()
        handles = [self._optimizer.register_step_pre_hook(self._pre_hook),
                   self._optimizer.register_step_post_hook(self._post_hook)]
        optimizers = self.optimizers if isinstance(self.optimizers, (list, tuple)) else [self.optimizers]
        saved_steps = [(o, o.__dict__.get("step")) for o in optimizers] if self._observe_only else []
        for optimizer, _ in saved_steps:
            optimizer.step = self._observe_step(optimizer)
        self.model.train(not self._observe_only)
        try:
            with self._model_restored():
                self.training_func(self.model, self.optimizers, self._patched_training_step,
                                   self.lr_schedulers, max_steps, max_epochs)
        except StopTraining:
            logger.debug("stopped the training function after %d steps", self.step_count)
        finally:
            for h in handles:
                h.remove()
            for optimizer, step in saved_steps:
                _restore_attr(optimizer, "step", step)
            self._remove_groups(added)
        if max_steps is not None and self.step_count < max_steps:
            logger.warning("the training function returned after %d optimizer steps; %d were asked for.",
                           self.step_count, max_steps)

    def _add_trainables_to_optimizer(self) -> list[dict]:
        known = {id(p) for g in self._optimizer.param_groups for p in g["params"]}
        missing = [p for p in self._trainables if id(p) not in known]
        if not missing:
            return []
        self._optimizer.add_param_group({"params": missing})
        return [self._optimizer.param_groups[-1]]

    def _remove_groups(self, groups: list[dict]) -> None:
        # The extra parameters are the compressors' own: leave the user's optimizer as it was.
        for group in groups:
            for p in group["params"]:
                self._optimizer.state.pop(p, None)
            # By identity: list.remove compares dicts, and so tensors, by value.
            groups_now = self._optimizer.param_groups
            del groups_now[next(i for i, g in enumerate(groups_now) if g is group)]

    def evaluate(self) -> Any:
        if self.evaluating_func is None:
            return None
        return self.evaluating_func(self.model)


def _restore_attr(obj: Any, name: str, value: Any) -> None:
    """Put back an instance attribute we replaced (or remove ours when there was none)."""
    if value is None:
        obj.__dict__.pop(name, None)
    else:
        setattr(obj, name, value)
