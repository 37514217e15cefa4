"""The base of every compressor: resolve the config list, share wrappers, fuse, unwrap.

Compressors never own the training loop. ``compress()`` runs each fused compressor's start,
one training run through the shared evaluator when any of them needs it, then each finish.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from ..errors import CompressionError
from .config import canonicalize_config_list
from .config.templates import SETTINGS
from .evaluator.base import Evaluator
from .wrapper import ModuleWrapper, TargetSpace, unwrap_all

logger = logging.getLogger(__name__)


class Compressor:
    """Shared machinery; subclasses set ``kind`` and ``target_space_cls``."""

    kind: ClassVar[str]
    target_space_cls: ClassVar[type[TargetSpace]]
    needs_training: ClassVar[bool] = False

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator | None = None,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        if not isinstance(model, nn.Module):
            raise CompressionError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if self.needs_training and evaluator is None:
            raise CompressionError(
                f"{type(self).__name__} runs the user's training (to measure importance, calibrate or distill): "
                "pass an evaluator (TorchEvaluator for a PyTorch loop, TransformersEvaluator for a transformers "
                "Trainer).")
        self.bound_model = model
        self.config_list = config_list
        self.evaluator = evaluator
        self._fused: list[Compressor] = []  # compressors this one was chained on, oldest first
        canonical = canonicalize_config_list(model, config_list, self.kind)
        self._wrappers: dict[str, ModuleWrapper] = existing_wrappers if existing_wrappers is not None else {}
        setting_cls = SETTINGS[self.kind]
        modules = dict(model.named_modules())
        self._target_spaces: dict[str, dict[str, TargetSpace]] = {}
        for module_name, targets in canonical.items():
            targets = {name: cfg for name, cfg in targets.items() if self._keeps_target(cfg.setting)}
            if not targets:
                continue
            module = modules[module_name]
            wrapper = self._wrappers.get(module_name)
            if wrapper is None:
                wrapper = ModuleWrapper(module, module_name)
                self._wrappers[module_name] = wrapper
            layout = setting_cls.layout(type(module).__name__)
            spaces = {name: self.target_space_cls(wrapper, cfg, layout) for name, cfg in targets.items()}
            wrapper.add_target_spaces(self.kind, spaces)
            wrapper.wrap()
            self._target_spaces[module_name] = spaces
        if evaluator is not None:
            evaluator.bind_model(model)

    @classmethod
    def from_compressor(cls, compressor: Compressor, new_config_list: list[dict[str, Any]],
                        evaluator: Evaluator | None = None, **kwargs: Any) -> Compressor:
        """Chain a new compressor on ``compressor``: same model, same wrappers, one training run.

        Each compressor class takes NNI 3.0's positional parameters after the config list (e.g.
        ``TaylorPruner.from_compressor(c, cfg, training_steps, evaluator=None)``); ``evaluator``
        defaults to the chain's.

        Example:
            >>> from torch import nn
            >>> from hubcompress.compression.pruning import L1NormPruner, LevelPruner
            >>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
            >>> first = L1NormPruner(net, [{"op_names": ["0"], "sparse_ratio": 0.5}])
            >>> second = LevelPruner.from_compressor(first, [{"op_names": ["1"], "sparse_ratio": 0.5}])
            >>> sorted(second.compress()[1])
            ['0', '1']
        """
        return cls._chain(compressor, new_config_list, evaluator, **kwargs)

    @classmethod
    def _chain(cls, compressor: Compressor, new_config_list: list[dict[str, Any]], evaluator: Evaluator | None,
               **kwargs: Any) -> Compressor:
        """Build ``cls`` on ``compressor``'s model and wrappers; every argument by keyword, so a
        subclass's ``from_compressor`` can take its own positional parameters (NNI's order)."""
        if not isinstance(compressor, Compressor):
            raise CompressionError(f"from_compressor chains on a compressor, got {type(compressor).__name__}.")
        if evaluator is not None and compressor.evaluator is not None and evaluator is not compressor.evaluator:
            raise CompressionError("fused compressors share one training loop: pass the same evaluator "
                                   "(or none, to reuse the first compressor's).")
        evaluator = evaluator or compressor.evaluator
        new = cls(compressor.bound_model, new_config_list, evaluator=evaluator,
                  existing_wrappers=compressor._wrappers, **kwargs)
        new._fused = compressor._fused + [compressor]
        return new

    @contextlib.contextmanager
    def _withdrawn_on_error(self) -> Iterator[None]:
        """For checks a subclass makes after wrapping: on an error, leave the model as it was."""
        try:
            yield
        except Exception:
            for module_name in self._target_spaces:
                wrapper = self._wrappers[module_name]
                wrapper.target_spaces.pop(self.kind, None)
                if not any(wrapper.target_spaces.values()):
                    wrapper.unwrap()
                    del self._wrappers[module_name]
            raise

    def _keeps_target(self, setting: dict[str, Any]) -> bool:
        """Whether a resolved target gets a target space (a quantizer skips template targets
        that the config gave no ``quant_dtype``)."""
        return True

    # --- the run ----------------------------------------------------------------------------
    def _training_context(self, chain: list[Compressor]) -> contextlib.AbstractContextManager:
        """A context around the one training run (PtqQuantizer: observe only, no updates)."""
        return contextlib.nullcontext()

    def _start(self) -> None:
        """Before training: register hooks, or do all the work for one-shot compressors."""

    def _finish(self) -> None:
        """After training: final masks / calibration, remove hooks."""

    def _default_steps(self) -> int | None:
        return None

    def _result(self) -> Any:
        raise NotImplementedError

    def compress(self, max_steps: int | None = None, max_epochs: int | None = None) -> tuple[nn.Module, Any]:
        """Run every fused compressor in one training run; returns ``(model, result)``."""
        chain = self._fused + [self]
        trainers = [c for c in chain if c.needs_training]
        if trainers:
            if max_steps is None and max_epochs is None:
                steps = [s for s in (c._default_steps() for c in trainers) if s is not None]
                max_steps = max(steps) if steps else None
            if max_steps is None and max_epochs is None:
                raise CompressionError(f"{type(self).__name__}.compress() needs max_steps or max_epochs.")
        with contextlib.ExitStack() as stack:
            if trainers:  # entered before any start, so a refusal leaves nothing half set up
                for c in chain:
                    stack.enter_context(c._training_context(chain))
            for c in chain:
                c._start()
            if trainers:
                assert self.evaluator is not None
                self.evaluator.train(max_steps, max_epochs)
        for c in chain:
            c._finish()
        return self.bound_model, self._result()

    def unwrap_model(self) -> None:
        """Remove every wrapper of this compressor and the ones it is fused with."""
        unwrap_all(self._wrappers)

    @property
    def _module_wrappers(self) -> dict[str, ModuleWrapper]:
        """NNI's name for ``{module name: wrapper}``; its LSQ example prints them."""
        return self._wrappers

    def track_forward(self, *args: Any, **kwargs: Any) -> Any:
        """One forward without gradients, e.g. to let activation targets see their shapes."""
        with torch.no_grad():
            return self.bound_model(*args, **kwargs)
