"""The evaluator for a transformers ``Trainer``, through its public callback and loss APIs."""

from __future__ import annotations

import logging
from typing import Any

from transformers import Trainer, TrainerCallback

from ...errors import CompressionError
from .base import Evaluator
from .torch_evaluator import _restore_attr

logger = logging.getLogger(__name__)


class _CompressionCallback(TrainerCallback):
    def __init__(self, evaluator: TransformersEvaluator):
        self.evaluator = evaluator

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        if self.evaluator.active and optimizer is not None:
            self.evaluator._ensure_in_optimizer(optimizer)
            if self.evaluator.observing:
                self.evaluator._skip_steps(optimizer)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.evaluator.active:
            self.evaluator._run_before_step()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.evaluator.active and self.evaluator._run_after_step():
            control.should_training_stop = True


class TransformersEvaluator(Evaluator):
    """Drives a ``transformers.Trainer``: a callback runs the step tasks, ``compute_loss`` is
    wrapped on the instance (accepting whatever keyword arguments the Trainer passes), and
    ``train(max_steps)`` runs ``trainer.train()`` for that many steps.

    Example (not run here: it needs a dataset):
        >>> # trainer = Trainer(model=model, args=TrainingArguments("out"), train_dataset=ds)
        >>> # pruner = TaylorPruner(model, config_list, TransformersEvaluator(trainer), training_steps=20)
    """

    def __init__(self, trainer: Trainer):
        super().__init__()
        if not isinstance(trainer, Trainer):
            raise CompressionError(f"TransformersEvaluator needs a transformers.Trainer, got {type(trainer).__name__}.")
        self.trainer = trainer
        self.active = False
        trainer.add_callback(_CompressionCallback(self))
        original = trainer.compute_loss

        def compute_loss(model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
            if self.active and self.observing:
                model.eval()  # the Trainer calls model.train() before each step; calibration must not
            loss, outputs = original(model, inputs, return_outputs=True, **kwargs)
            if self.active:
                loss = self._loss(loss, inputs)
            return (loss, outputs) if return_outputs else loss

        trainer.compute_loss = compute_loss

    def bind_model(self, model: Any) -> None:
        if self.trainer.model is not model:
            raise CompressionError("the Trainer was built on another model than the one being compressed; "
                                   "build the Trainer on the same model object.")
        super().bind_model(model)

    def _ensure_in_optimizer(self, optimizer: Any) -> None:
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [p for p in self._trainables if id(p) not in known]
        if missing:
            optimizer.add_param_group({"params": missing})

    def _skip_steps(self, optimizer: Any) -> None:
        # The callbacks still run the step tasks; only the update is skipped.
        self._skipped = (optimizer, optimizer.__dict__.get("step"))
        optimizer.step = lambda *a, **k: optimizer.zero_grad(set_to_none=True)

    def train(self, max_steps: int | None = None, max_epochs: int | None = None) -> None:
        args = self.trainer.args
        saved = (args.max_steps, args.num_train_epochs)
        if max_steps is not None:
            args.max_steps = max_steps
        if max_epochs is not None:
            args.num_train_epochs = max_epochs
        self._max_steps = max_steps
        self.step_count = 0
        self.active = True
        self._skipped: tuple[Any, Any] | None = None
        try:
            with self._model_restored():
                self.trainer.train()
        finally:
            self.active = False
            args.max_steps, args.num_train_epochs = saved
            if self._skipped is not None:
                _restore_attr(self._skipped[0], "step", self._skipped[1])

    def evaluate(self) -> Any:
        return self.trainer.evaluate()
