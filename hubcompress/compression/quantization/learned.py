"""Quantizers with learned or fixed grids: LSQ, LSQ+, DoReFa, BNN."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...errors import CompressionError, ConfigListError
from ..distributed import all_reduce_mean
from ..evaluator.base import Evaluator
from ..wrapper import ModuleWrapper
from .base import Quantizer, register_quantizer
from .target_space import MIN_SCALE, SCHEMES, QuantizationTargetSpace, quantize_dequantize, register_quant_method


def _round_pass(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x  # round forward, identity backward


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    return (x - x * g).detach() + x * g  # x forward, gradient times g backward


def _lsq_step(space: QuantizationTargetSpace, t: torch.Tensor) -> tuple[torch.Tensor, float]:
    g = 1.0 / math.sqrt(space.elements_per_scale(t) * max(1, space.dtype.qmax))
    scale = _grad_scale(space.scale.abs().clamp(min=MIN_SCALE), g)
    return space.broadcast(scale, t), g


@register_quant_method("lsq")
def _lsq(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    if space.scale is None or not getattr(space, "lsq_ready", True):
        return t
    scale, _ = _lsq_step(space, t)
    zp = space.broadcast(space.zero_point, t)
    return (_round_pass(torch.clamp(t / scale + zp, space.dtype.qmin, space.dtype.qmax)) - zp) * scale


@register_quant_method("lsq_plus")
def _lsq_plus(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    offset = getattr(space, "lsq_offset", None)
    if offset is None or space.scale is None or not getattr(space, "lsq_ready", True):
        return _lsq(t, space)
    scale, g = _lsq_step(space, t)
    beta = space.broadcast(_grad_scale(offset, g), t)
    return _round_pass(torch.clamp((t - beta) / scale, space.dtype.qmin, space.dtype.qmax)) * scale + beta


class _LearnedScaleQuantizer(Quantizer):
    """Scales are parameters trained with the model; initialised from the weights at start and
    from the first training batch for activations (averaged over ranks)."""

    needs_training = True

    def _refresh_scale(self, space: QuantizationTargetSpace) -> None:
        pass  # learned, not derived from the range

    def _init_scale(self, space: QuantizationTargetSpace, value: torch.Tensor) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        super()._start()
        params = []
        for space in self._spaces():
            if space.is_activation and space.granularity != "default" and space.last_shape is None:
                raise CompressionError(
                    f"{type(self).__name__}: {space.wrapper.module_name}.{space.name} has a per-channel scale whose "
                    "shape is known only after a forward; call quantizer.track_forward(example_input) before "
                    "compress().")
            shape = space.reduce(torch.zeros(space.last_shape), "max").shape if space.last_shape else ()
            params.append(space.make_parameter("scale", torch.ones(shape)))
            space.lsq_ready = False
            if not space.is_activation:
                self._init_scale(space, self.effective_weight(space))
            params += [p for p in [getattr(space, "lsq_offset", None)] if p is not None]
            space.method = self.method_for(space)
        self._handles.append(self.evaluator.add_trainable(params))

    def _observe(self, space: QuantizationTargetSpace, tensor: torch.Tensor) -> None:
        if not self._collecting or not space.wrapper.module.training:
            return
        with torch.no_grad():
            if space.is_activation:
                self._observe_activation(space, tensor, "minmax")
                if not space.lsq_ready:
                    self._init_scale(space, tensor)
            else:
                self._observe_weight(space, tensor)


@register_quantizer("lsq")
class LsqQuantizer(_LearnedScaleQuantizer):
    """Learned step size quantization (Esser et al. 2020): the scale is trained by the task loss,
    its gradient scaled by ``1 / sqrt(elements * qmax)``; initialised to ``2 * mean|x| / sqrt(qmax)``.
    Zero points stay where the first observed range puts them.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from hubcompress.compression import LsqQuantizer, TorchEvaluator
        >>> model = nn.Sequential(nn.Linear(4, 3))
        >>> def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        ...     for _ in range(max_steps):
        ...         loss = training_step(torch.randn(8, 4), model)
        ...         optimizers.zero_grad(); loss.backward(); optimizers.step()
        >>> evaluator = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=0.01),
        ...                            lambda x, model: model(x).pow(2).mean())
        >>> config = [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int8",
        ...            "granularity": "per_channel"}]
        >>> quantizer = LsqQuantizer(model, config, evaluator)
        >>> _, calibration = quantizer.compress(max_steps=2)
        >>> tuple(calibration["0"]["weight"]["scale"].shape), type(model[0]._hc_wrapper.weight_scale).__name__
        ((3, 1), 'Parameter')
    """

    training_method = "lsq"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator, *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        super().__init__(model, config_list, evaluator, existing_wrappers=existing_wrappers)

    def _init_scale(self, space: QuantizationTargetSpace, value: torch.Tensor) -> None:
        scale = all_reduce_mean(2 * space.reduce(value, "absmean") / math.sqrt(max(1, space.dtype.qmax)))
        lo, hi = all_reduce_mean(space.reduce(value, "min")), all_reduce_mean(space.reduce(value, "max"))
        space.zero_point = SCHEMES[space.scheme](lo, hi, space.dtype)[1]
        space.scale = scale.clamp(min=MIN_SCALE)
        space.lsq_ready = True


@register_quantizer("lsqplus")
class LsqPlusQuantizer(LsqQuantizer):
    """LSQ+ (Bhalgat et al. 2020): affine targets also learn an offset ``beta``
    (``x ≈ q * scale + beta``), initialised from the first range; symmetric targets start from
    ``max(|mean - 3 std|, |mean + 3 std|)``. At the end each offset is snapped to the integer
    zero point ``-beta / scale`` that int8 kernels need. Called like :class:`LsqQuantizer`.
    """

    training_method = "lsq_plus"

    def _init_scale(self, space: QuantizationTargetSpace, value: torch.Tensor) -> None:
        dt = space.dtype
        if space.scheme == "affine":
            lo = all_reduce_mean(space.reduce(value, "min").clamp(max=0))
            hi = all_reduce_mean(space.reduce(value, "max").clamp(min=0))
            scale = ((hi - lo) / (dt.qmax - dt.qmin)).clamp(min=MIN_SCALE)
            if getattr(space, "lsq_offset", None) is None:
                space.lsq_offset = space.make_parameter("offset", lo - dt.qmin * scale)
                space.zero_point = torch.zeros_like(scale)
            else:
                with torch.no_grad():
                    space.lsq_offset.copy_(lo - dt.qmin * scale)
        else:
            mean, std = all_reduce_mean(space.reduce(value, "mean")), all_reduce_mean(space.reduce(value, "std"))
            half = (dt.qmax - dt.qmin) // 2
            scale = (torch.maximum((mean - 3 * std).abs(), (mean + 3 * std).abs()) / half).clamp(min=MIN_SCALE)
            space.zero_point = SCHEMES["symmetric"](-scale, scale, dt)[1]
        space.scale = scale
        space.lsq_ready = True

    def _start(self) -> None:
        for space in self._spaces():  # offsets are parameters before the optimizer sees them
            if space.scheme == "affine" and getattr(space, "lsq_offset", None) is None:
                shape = space.reduce(torch.zeros(space.last_shape), "max").shape if space.last_shape else ()
                space.lsq_offset = space.make_parameter("offset", torch.zeros(shape))
                space.zero_point = torch.zeros(shape)
        super()._start()

    def _finish(self) -> None:
        super()._finish()
        with torch.no_grad():
            for space in self._spaces():
                offset = getattr(space, "lsq_offset", None)
                if offset is None or space.scale is None:
                    continue
                scale = space.scale.abs().clamp(min=MIN_SCALE)
                zp = torch.round(-offset / scale).clamp(space.dtype.qmin, space.dtype.qmax)
                offset.copy_(-zp * scale)
                space.zero_point = zp


def _fixed_grid(space: QuantizationTargetSpace, lo: float, hi: float, scale: float, zero_point: float) -> None:
    space.tracked_min, space.tracked_max = torch.tensor(lo), torch.tensor(hi)
    space.scale, space.zero_point = torch.tensor(scale), torch.tensor(zero_point)


class _FixedGridQuantizer(Quantizer):
    """A fixed grid set at construction; weights need a signed (narrow) int dtype."""

    needs_training = True

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator, *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        super().__init__(model, config_list, evaluator, existing_wrappers=existing_wrappers)
        with self._withdrawn_on_error():
            for space in self._spaces():
                if not space.is_activation and not space.dtype.signed:
                    raise ConfigListError(
                        f"{type(self).__name__}: {space.wrapper.module_name}.{space.name} is a weight with quant_dtype "
                        f"{space.dtype.name!r}; its grid is symmetric around 0, so use a signed int{{b}} like 'int8'.",
                        index=space.config_index, key="quant_dtype")
        for space in self._spaces():
            self._set_grid(space)

    def _set_grid(self, space: QuantizationTargetSpace) -> None:
        raise NotImplementedError

    def _refresh_scale(self, space: QuantizationTargetSpace) -> None:
        pass  # the grid is fixed

    def _observe_weight(self, space: QuantizationTargetSpace, value: torch.Tensor | None = None) -> None:
        pass  # the tracked range is the grid's, set once

    def _start(self) -> None:
        super()._start()
        for space in self._spaces():
            space.observer = None
            space.method = self.method_for(space)


@register_quant_method("dorefa")
def _dorefa(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    value = _dorefa_value(t, space)
    quantized = quantize_dequantize(value, space.scale, space.zero_point, space.dtype.qmin, space.dtype.qmax)
    return value + (quantized - value).detach()


def _dorefa_value(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    if space.is_activation:
        return torch.clamp(t, 0, 1)
    squashed = torch.tanh(t)
    return squashed / squashed.abs().max().clamp(min=MIN_SCALE)


@register_quantizer("dorefa")
class DoReFaQuantizer(_FixedGridQuantizer):
    """DoReFa-Net (Zhou et al. 2016): weights become ``tanh(w) / max|tanh(w)|`` in [-1, 1] on a
    grid of step ``1 / qmax``; activations are clipped to [0, 1] on a grid of step
    ``1 / (qmax - qmin)``; gradients pass straight through the rounding.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from hubcompress.compression import DoReFaQuantizer, TorchEvaluator
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> evaluator = TorchEvaluator(lambda *args: None, torch.optim.SGD(model.parameters(), lr=0.1),
        ...                            lambda x, model: model(x).sum())
        >>> config = [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int8"}]
        >>> _, calibration = DoReFaQuantizer(model, config, evaluator).compress(max_steps=1)
        >>> round(float(calibration["0"]["weight"]["scale"]) * 127, 4)  # weights on a grid of 1/127
        1.0
    """

    training_method = "dorefa"

    def _set_grid(self, space: QuantizationTargetSpace) -> None:
        dt = space.dtype
        if space.is_activation:
            _fixed_grid(space, 0.0, 1.0, 1.0 / (dt.qmax - dt.qmin), float(dt.qmin))
        else:
            _fixed_grid(space, -1.0, 1.0, 1.0 / dt.qmax, 0.0)

    def _baked_value(self, space: QuantizationTargetSpace, value: torch.Tensor) -> torch.Tensor:
        return _dorefa_value(value, space)


@register_quant_method("bnn")
def _bnn(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    clipped = torch.clamp(t, -1, 1)  # gradient passes where |t| <= 1 (hard tanh)
    return clipped + (torch.where(t >= 0, 1.0, -1.0).to(t.dtype) - clipped).detach()


@register_quantizer("bnn")
class BNNQuantizer(_FixedGridQuantizer):
    """Binarized neural networks (Courbariaux et al. 2016): weights and activations become +1 / -1
    (``x >= 0`` gives +1), with a straight-through gradient inside [-1, 1]. The calibration
    config says ``quant_bits: 1``, scale 1, zero point 0 (binary weights fit any int dtype;
    binary activations have no QuantizeLinear form).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from hubcompress.compression import BNNQuantizer, TorchEvaluator
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> evaluator = TorchEvaluator(lambda *args: None, torch.optim.SGD(model.parameters(), lr=0.1),
        ...                            lambda x, model: model(x).sum())
        >>> config = [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int8"}]
        >>> quantizer = BNNQuantizer(model, config, evaluator)
        >>> _, calibration = quantizer.compress(max_steps=1)
        >>> calibration["0"]["weight"]["quant_bits"], sorted(model[0]._hc_wrapper.apply_target(
        ...     "weight", model[0].weight).unique().tolist())
        (1, [-1.0, 1.0])
    """

    training_method = "bnn"

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator, *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        super().__init__(model, _binary_dtypes(config_list), evaluator, existing_wrappers=existing_wrappers)
        self.config_list = config_list

    def _set_grid(self, space: QuantizationTargetSpace) -> None:
        _fixed_grid(space, -1.0, 1.0, 1.0, 0.0)
        space.quant_bits = 1

    def _clip_weights(self) -> None:
        # BNN keeps the real-valued weights in [-1, 1] (Courbariaux et al.): outside it the
        # straight-through gradient is 0 and a weight would stay stuck.
        with torch.no_grad():
            for space in self._spaces():
                if isinstance(space.target, nn.Parameter):
                    space.target.clamp_(-1.0, 1.0)

    def _start(self) -> None:
        super()._start()
        if self.evaluator is not None:
            self._handles += self.evaluator.patch_optimizer_step(after=[self._clip_weights])

    def _baked_value(self, space: QuantizationTargetSpace, value: torch.Tensor) -> torch.Tensor:
        return torch.where(value >= 0, 1.0, -1.0).to(value.dtype)


def _binary_dtypes(config_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BNN binarizes whatever its configs select: NNI's documented BNN config says
    ``quant_dtype: None``, so a config (or target setting) without a dtype gets int8, the dtype
    its +1 / -1 values are stored in (``quant_bits`` stays 1)."""
    out = []
    for config in config_list:
        if not isinstance(config, dict):
            out.append(config)  # the config-list check reports it
            continue
        config = dict(config)
        if config.get("quant_dtype") is None:
            config["quant_dtype"] = "int8"
        settings = config.get("target_settings")
        if isinstance(settings, dict):
            config["target_settings"] = {
                name: ({**s, "quant_dtype": "int8"} if isinstance(s, dict) and "quant_dtype" in s
                       and s["quant_dtype"] is None else s) for name, s in settings.items()}
        out.append(config)
    return out
