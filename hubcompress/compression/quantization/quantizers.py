"""QAT and PTQ: scales from observed ranges (EMA while training, min/max while calibrating)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from ...errors import CompressionError
from ..compressor import Compressor
from ..evaluator.base import Evaluator
from ..wrapper import ModuleWrapper
from .base import Quantizer, register_quantizer
from .target_space import QuantizationTargetSpace

logger = logging.getLogger(__name__)


@register_quantizer("qat")
class QATQuantizer(Quantizer):
    """Quantization-aware training (Jacob et al. 2018): fake-quantize with a straight-through
    gradient while the user's training runs. Weight ranges are the current weights' (after BN
    folding); activation ranges are an exponential moving average (``ema_decay``) of each
    training batch's min / max. Before ``quant_start_step`` optimizer steps only the ranges
    are tracked.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from hubcompress.compression import QATQuantizer, TorchEvaluator
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        ...     for _ in range(max_steps):
        ...         loss = training_step((torch.randn(16, 4), torch.randint(0, 2, (16,))), model)
        ...         optimizers.zero_grad(); loss.backward(); optimizers.step()
        >>> step = lambda batch, model: nn.functional.cross_entropy(model(batch[0]), batch[1])
        >>> evaluator = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=0.1), step)
        >>> config = [{"op_types": ["Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "int8"}]
        >>> _, calibration = QATQuantizer(model, config, evaluator, quant_start_step=1).compress(max_steps=3)
        >>> sorted(calibration["0"]), calibration["0"]["weight"]["quant_bits"]
        (['_input_', 'weight'], 8)
    """

    needs_training = True
    training_method = "qat_clamp_round"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator,
                 quant_start_step: int = 0, *, ema_decay: float = 0.99,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        if not isinstance(quant_start_step, int) or quant_start_step < 0:
            raise CompressionError(f"quant_start_step must be an int >= 0, got {quant_start_step!r}.")
        if not 0.0 <= ema_decay < 1.0:
            raise CompressionError(f"ema_decay must be in [0, 1), got {ema_decay!r}.")
        super().__init__(model, config_list, evaluator, existing_wrappers=existing_wrappers)
        self.quant_start_step = quant_start_step
        self.ema_decay = ema_decay

    @classmethod
    def from_compressor(cls, compressor: Compressor, new_config_list: list[dict[str, Any]], quant_start_step: int = 0,
                        evaluator: Evaluator | None = None, **kwargs: Any) -> QATQuantizer:
        """NNI's call form: ``QATQuantizer.from_compressor(previous, config_list, quant_start_step)``."""
        return cls._chain(compressor, new_config_list, evaluator, quant_start_step=quant_start_step, **kwargs)

    def _set_methods(self, quantizing: bool) -> None:
        for space in self._spaces():
            space.method = self.method_for(space) if quantizing else "bypass"

    def _start(self) -> None:
        super()._start()
        self._set_methods(self.quant_start_step == 0)

    def _count_step(self) -> None:
        super()._count_step()
        if self._steps == self.quant_start_step:
            logger.info("QATQuantizer: fake-quantization starts after step %d", self._steps)
            self._set_methods(True)

    def _observe(self, space: QuantizationTargetSpace, tensor: torch.Tensor) -> None:
        if not self._collecting or not space.wrapper.module.training:
            return
        with torch.no_grad():
            if space.is_activation:
                self._observe_activation(space, tensor, "ema", self.ema_decay)
            else:
                self._observe_weight(space, tensor)

    def _finish(self) -> None:
        if self._collecting and self._steps < self.quant_start_step:
            logger.warning("QATQuantizer: training stopped after %d steps, before quant_start_step %d; the model "
                           "never trained with fake-quantization.", self._steps, self.quant_start_step)
        super()._finish()


@register_quantizer("ptq")
class PtqQuantizer(Quantizer):
    """Post-training quantization: runs the user's training loop only to *observe* (model in
    eval mode, optimizer steps skipped, the model's tensors put back), tracking each
    activation's min / max over the batches; weights are measured directly. NNI's PtqQuantizer
    took real optimizer steps first; this one changes no weight.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from hubcompress.compression import PtqQuantizer, TorchEvaluator
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> before = model[0].weight.clone()
        >>> def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        ...     for _ in range(max_steps):
        ...         loss = training_step(torch.randn(8, 4), model)
        ...         optimizers.zero_grad(); loss.backward(); optimizers.step()
        >>> evaluator = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=1.0),
        ...                            lambda x, model: model(x).sum())
        >>> quantizer = PtqQuantizer(model, [{"op_types": ["Linear"], "quant_dtype": "int8"}], evaluator)
        >>> _, calibration = quantizer.compress(max_steps=4)
        >>> torch.equal(model[0].weight, before), sorted(calibration["0"])
        (True, ['_input_', '_output_', 'bias', 'weight'])
    """

    needs_training = True
    training_method = "clamp_round"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator, *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        super().__init__(model, config_list, evaluator, existing_wrappers=existing_wrappers)

    def _training_context(self, chain: list[Compressor]) -> contextlib.AbstractContextManager:
        trainers = [type(c).__name__ for c in chain if c.needs_training and c is not self]
        if trainers:
            raise CompressionError(
                f"PtqQuantizer only observes (no optimizer steps), and {trainers} need a real training run. "
                "Compress those first, unwrap, then calibrate with a PtqQuantizer of its own.")
        assert self.evaluator is not None
        return self.evaluator.observe_only()

    def _observe(self, space: QuantizationTargetSpace, tensor: torch.Tensor) -> None:
        if self._collecting and space.is_activation:
            with torch.no_grad():
                self._observe_activation(space, tensor, "minmax")
