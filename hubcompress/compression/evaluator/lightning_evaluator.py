"""The evaluator for a Lightning ``Trainer`` and ``LightningDataModule`` (NNI's
``LightningEvaluator``), through Lightning's public callback API.

Needs the optional ``lightning`` package (``pip install 'hubcompress[lightning]'``); the
classes of ``lightning.pytorch`` and of the older ``pytorch_lightning`` package both work.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ...errors import CompressionError
from .base import Evaluator
from .torch_evaluator import _restore_attr

logger = logging.getLogger(__name__)


def _lightning_packages() -> list[Any]:
    packages = []
    try:
        import lightning.pytorch as pl

        packages.append(pl)
    except ImportError:
        pass
    try:
        import pytorch_lightning as pl_old

        packages.append(pl_old)
    except ImportError:
        pass
    if not packages:
        raise CompressionError("LightningEvaluator needs the lightning package: pip install 'hubcompress[lightning]' "
                               "(or pip install lightning).")
    return packages


def _package_of(obj: Any, packages: list[Any], cls_name: str) -> Any | None:
    for pl in packages:
        if isinstance(obj, getattr(pl, cls_name)):
            return pl
    return None


class LightningEvaluator(Evaluator):
    """Runs ``trainer.fit(model, data_module)`` for the compressors: a callback runs the step
    tasks around the first optimizer's step (after the backward, before the update), the
    model's ``training_step`` gets the loss patches (its loss, or the ``'loss'`` of the dict it
    returns), and ``train(max_steps)`` fits for that many more optimizer steps.

    NNI wanted ``nni.trace``-wrapped ``Trainer`` and data module so that it could build a fresh
    Trainer for each run. ``hubcompress.compression.trace`` is the identity, so this evaluator
    reuses the Trainer you pass: each ``train`` continues its step and epoch counts, and no
    optimizer needs rebuilding (parameters keep their names while wrapped).

    Example (not run here: it needs lightning and a LightningModule):
        >>> # trainer = lightning.pytorch.Trainer(max_epochs=1, logger=False)
        >>> # evaluator = LightningEvaluator(trainer, data_module)
        >>> # TaylorPruner(lightning_module, config_list, evaluator, training_steps=20).compress()
    """

    def __init__(self, trainer: Any, data_module: Any, dummy_input: Any = None):
        super().__init__()
        packages = _lightning_packages()
        self._pl = _package_of(trainer, packages, "Trainer")
        if self._pl is None:
            raise CompressionError(f"LightningEvaluator needs a lightning Trainer, got {type(trainer).__name__}.")
        if _package_of(data_module, [self._pl], "LightningDataModule") is None:
            raise CompressionError(f"LightningEvaluator needs a LightningDataModule (of the same lightning package as "
                                   f"the Trainer), got {type(data_module).__name__}.")
        self.trainer = trainer
        self.data_module = data_module
        self.dummy_input = dummy_input
        self.active = False
        self._optimizer: torch.optim.Optimizer | None = None
        self._run_handles: list[Any] = []
        self._added_groups: list[dict] = []
        self._skipped: tuple[Any, Any] | None = None
        trainer.callbacks.append(_make_callback(self._pl, self))

    def bind_model(self, model: Any) -> None:
        if _package_of(model, [self._pl], "LightningModule") is None:
            raise CompressionError(
                f"LightningEvaluator compresses a LightningModule (of the Trainer's lightning package), got "
                f"{type(model).__name__}; name its submodules in the config list (e.g. 'model.conv1').")
        super().bind_model(model)

    # --- called by the callback -------------------------------------------------------------
    def _on_train_start(self, trainer: Any) -> None:
        if not trainer.optimizers:
            raise CompressionError("LightningEvaluator: the LightningModule's configure_optimizers returned no "
                                   "optimizer; compressors hook the first optimizer's step.")
        optimizer = trainer.optimizers[0]
        self._optimizer = optimizer
        known = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [p for p in self._trainables if id(p) not in known]
        if missing:
            optimizer.add_param_group({"params": missing})
            self._added_groups.append(optimizer.param_groups[-1])
        if self.observing:
            self._skipped = (optimizer, optimizer.__dict__.get("step"))

            def step(closure: Any = None, **kwargs: Any) -> Any:  # the closure runs forward + backward
                loss = closure() if closure is not None else None
                optimizer.zero_grad(set_to_none=True)
                self._run_after_step()
                return loss
            optimizer.step = step
        else:
            self._run_handles.append(optimizer.register_step_post_hook(lambda *args: self._run_after_step()))

    def _on_before_optimizer_step(self, optimizer: Any) -> None:
        if optimizer is self._optimizer:
            self._run_before_step()

    def _on_train_end(self) -> None:
        for handle in self._run_handles:
            handle.remove()
        self._run_handles = []
        if self._skipped is not None:
            _restore_attr(self._skipped[0], "step", self._skipped[1])
            self._skipped = None
        optimizer = self._optimizer
        for group in self._added_groups:  # the compressors' own parameters leave the user's optimizer
            for p in group["params"]:
                optimizer.state.pop(p, None)
            del optimizer.param_groups[next(i for i, g in enumerate(optimizer.param_groups) if g is group)]
        self._added_groups = []

    # --- the run --------------------------------------------------------------------------
    def _patched_training_step(self, original: Any) -> Any:
        def training_step(*args: Any, **kwargs: Any) -> Any:
            if self.observing:
                self.model.eval()  # calibration sees inference behaviour; Lightning set train mode
            output = original(*args, **kwargs)
            batch = args[0] if args else kwargs.get("batch")
            if isinstance(output, torch.Tensor):
                return self._loss(output, batch)
            if isinstance(output, dict) and "loss" in output:
                return {**output, "loss": self._loss(output["loss"], batch)}
            raise CompressionError("LightningEvaluator: training_step must return the loss tensor or a dict with "
                                   f"'loss' for the compressors to patch it, got {type(output).__name__}.")
        return training_step

    def train(self, max_steps: int | None = None, max_epochs: int | None = None) -> None:
        if self.model is None:
            raise CompressionError("the evaluator has no model: a compressor binds it; call bind_model(model).")
        trainer, model = self.trainer, self.model
        fit_loop = trainer.fit_loop
        saved = (fit_loop.epoch_loop.max_steps, fit_loop.max_epochs, trainer.num_sanity_val_steps)
        # The Trainer may have run before: the limits count on from where it stands.
        if max_steps is not None:
            fit_loop.epoch_loop.max_steps = trainer.global_step + max_steps
        elif saved[0] is not None and saved[0] >= 0:
            fit_loop.epoch_loop.max_steps = trainer.global_step + saved[0]
        if max_epochs is not None:
            fit_loop.max_epochs = trainer.current_epoch + max_epochs
        elif max_steps is not None:
            fit_loop.max_epochs = -1  # max_steps alone decides
        elif saved[1] is not None and saved[1] >= 0:
            fit_loop.max_epochs = trainer.current_epoch + saved[1]
        trainer.num_sanity_val_steps = 0  # a sanity check would feed the compressors' hooks
        self._max_steps = max_steps
        self.step_count = 0
        had_own_step = "training_step" in model.__dict__
        own_step = model.__dict__.get("training_step")
        model.training_step = self._patched_training_step(model.training_step)
        self.active = True
        try:
            with self._model_restored():
                trainer.fit(model, self.data_module)
        finally:
            self.active = False
            if had_own_step:
                model.training_step = own_step
            else:
                del model.training_step
            fit_loop.epoch_loop.max_steps, fit_loop.max_epochs, trainer.num_sanity_val_steps = saved
            if self._optimizer is not None and (self._run_handles or self._skipped or self._added_groups):
                self._on_train_end()
            model.trainer = None  # NNI did the same: the model must not keep (and pickle) the Trainer
        if max_steps is not None and self.step_count < max_steps:
            logger.warning("the Trainer stopped after %d optimizer steps; %d were asked for.", self.step_count,
                           max_steps)

    def evaluate(self) -> tuple[float | None, list[dict[str, float]]]:
        """``trainer.test(model, data_module)``; returns NNI's ``(metric, results)``, ``metric``
        being the mean of the ``'default'`` entries the test step logged (None without one)."""
        if self.model is None:
            raise CompressionError("the evaluator has no model: a compressor binds it; call bind_model(model).")
        results = self.trainer.test(self.model, self.data_module)
        self.model.trainer = None
        values = [r["default"] for r in results if "default" in r]
        return (sum(values) / len(values) if values else None), results

    def get_dummy_input(self) -> Any:
        """``dummy_input`` if given, else the first batch of the data module's training data."""
        if self.dummy_input is not None:
            return self.dummy_input
        return next(iter(self.data_module.train_dataloader()))


def _make_callback(pl: Any, evaluator: LightningEvaluator) -> Any:
    """A Callback of the Trainer's own lightning package (lightning and pytorch_lightning have
    separate class trees)."""

    class _CompressionCallback(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if evaluator.active:
                evaluator._on_train_start(trainer)

        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            if evaluator.active:
                evaluator._on_before_optimizer_step(optimizer)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            if evaluator.active:
                evaluator._on_train_end()

    return _CompressionCallback()
