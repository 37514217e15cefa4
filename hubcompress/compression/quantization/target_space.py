"""The quantization view of one target: dtype bounds, scheme, granularity, tracked range,
scale and zero point, and the fake-quantize methods found by name in ``QUANT_METHODS``.

Scales follow the target's granularity: a 0-dim tensor per tensor, otherwise the block-reduced
shape with size-1 dims where a block spans the whole dim (``[out, 1]`` per output channel of a
Linear weight, ``[1, 1, C]`` per channel of a ``[batch, seq, C]`` activation), so a scale
broadcasts against its target.

Example:
    >>> import torch
    >>> dt = parse_dtype("int8")
    >>> dt.qmin, dt.qmax  # int{b} is narrow range
    (-127, 127)
    >>> scale, zp = SCHEMES["symmetric"](torch.tensor(-2.0), torch.tensor(1.0), dt)
    >>> round(float(scale) * 127, 4), float(zp)
    (2.0, 0.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ...errors import ConfigListError
from ..config.canonical import TargetConfig, register_kind_checks
from ..pruning.granularity import GranularityError, expand_mask, reduced_shape, resolve_kernel, to_blocks
from ..wrapper import TargetSpace

_DTYPE = re.compile(r"^(u?)int(\d+)$")
MIN_SCALE = 1e-8  # an all-zero target still gets a valid (positive) scale


@dataclass(frozen=True)
class QuantDtype:
    """An integer grid: ``int{b}`` is narrow range ``[-(2^(b-1)-1), 2^(b-1)-1]``, ``uint{b}`` is ``[0, 2^b-1]``."""

    name: str
    bits: int
    signed: bool

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1


def parse_dtype(name: Any) -> QuantDtype:
    """``int8`` / ``uint8`` / ``int4`` / ... as a QuantDtype; ValueError says what is accepted."""
    m = _DTYPE.match(name) if isinstance(name, str) else None
    bits = int(m.group(2)) if m else 0
    signed = bool(m) and not m.group(1)
    if not m or not (2 if signed else 1) <= bits <= 16:
        raise ValueError(f"unknown quant_dtype {name!r}; use int{{b}} (narrow range, 2 <= b <= 16) or uint{{b}} "
                         "(1 <= b <= 16), e.g. 'int8', 'uint8', 'int4'")
    return QuantDtype(name, bits, signed)


# --- schemes: (tracked min, tracked max, dtype) -> (scale, zero point) -----------------------

def _symmetric(lo: torch.Tensor, hi: torch.Tensor, dt: QuantDtype) -> tuple[torch.Tensor, torch.Tensor]:
    half = (dt.qmax - dt.qmin) // 2
    amax = torch.maximum(-lo.clamp(max=0), hi.clamp(min=0))
    scale = (amax / half).clamp(min=MIN_SCALE)
    return scale, torch.full_like(scale, float(dt.qmin + (dt.qmax - dt.qmin + 1) // 2))


def _affine(lo: torch.Tensor, hi: torch.Tensor, dt: QuantDtype) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)  # zero must be exact: padding, ReLU, masks
    scale = ((hi - lo) / (dt.qmax - dt.qmin)).clamp(min=MIN_SCALE)
    return scale, (dt.qmin - torch.round(lo / scale)).clamp(dt.qmin, dt.qmax)


SCHEMES: dict[str, Callable[[torch.Tensor, torch.Tensor, QuantDtype], tuple[torch.Tensor, torch.Tensor]]] = {
    "symmetric": _symmetric,
    "affine": _affine,
}

# --- fake-quantize methods: fn(tensor, space) -> tensor --------------------------------------
QUANT_METHODS: dict[str, Callable[[torch.Tensor, "QuantizationTargetSpace"], torch.Tensor]] = {}


def register_quant_method(name: str) -> Callable:
    """Register ``fn(tensor, space) -> tensor`` under ``name`` (quantizers add their own)."""
    def deco(fn: Callable) -> Callable:
        QUANT_METHODS[name] = fn
        return fn
    return deco


def quantize_dequantize(t: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                        qmax: int) -> torch.Tensor:
    """Round to the integer grid and back (no gradient through the rounding)."""
    return (torch.clamp(torch.round(t / scale) + zero_point, qmin, qmax) - zero_point) * scale


@register_quant_method("bypass")
def _bypass(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    return t


@register_quant_method("clamp_round")
def _clamp_round(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    if space.scale is None:
        return t
    scale, zp = space.broadcast(space.scale, t), space.broadcast(space.zero_point, t)
    return quantize_dequantize(t, scale, zp, space.dtype.qmin, space.dtype.qmax)


class _StraightThrough(torch.autograd.Function):
    """Fake-quantize; the gradient passes where the value is inside the grid's range, 0 outside.
    Only a boolean mask is kept for backward (a float copy per activation would cost 4x)."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        q = torch.round(t / scale) + zp
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (q.clamp(qmin, qmax) - zp) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


@register_quant_method("qat_clamp_round")
def _qat_clamp_round(t: torch.Tensor, space: QuantizationTargetSpace) -> torch.Tensor:
    if space.scale is None:
        return t
    scale, zp = space.broadcast(space.scale.detach(), t), space.broadcast(space.zero_point, t)
    return _StraightThrough.apply(t, scale, zp, space.dtype.qmin, space.dtype.qmax)


_REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "min": lambda b: b.amin(1),
    "max": lambda b: b.amax(1),
    "absmean": lambda b: b.abs().mean(1),
    "mean": lambda b: b.mean(1),
    "std": lambda b: b.std(1, unbiased=False),
}


class QuantizationTargetSpace(TargetSpace):
    """Setting, tracked range, scale and zero point of one quantized target. Scale, zero point
    and range are non-persistent buffers of the wrapper (an LSQ scale is a parameter there)."""

    def __init__(self, wrapper: Any, config: TargetConfig, layout: Any):
        super().__init__(wrapper, config, layout)
        self.dtype = parse_dtype(self.setting["quant_dtype"])
        self.scheme: str = self.setting.get("quant_scheme") or ("affine" if self.is_activation else "symmetric")
        self.granularity = self.setting.get("granularity") or "default"
        self.apply_method: str | None = self.setting.get("apply_method")
        self.method = "bypass"  # the QUANT_METHODS entry in use; the quantizer sets it
        self.observer: Callable[[QuantizationTargetSpace, torch.Tensor], None] | None = None
        self.fold: Callable[[torch.Tensor], torch.Tensor] | None = None  # BN folding of a fused leader
        self.quant_bits: int = self.dtype.bits
        self.last_shape: tuple[int, ...] | None = None if self.is_activation else tuple(self.target.shape)

    # Tensors on the wrapper, named after the target.
    def _get(self, what: str) -> torch.Tensor | None:
        key = f"{self.name}_{what}"
        return self.wrapper._parameters.get(key) if key in self.wrapper._parameters else self.wrapper._buffers.get(key)

    def _set(self, what: str, value: torch.Tensor) -> None:
        key = f"{self.name}_{what}"
        current = self._get(what)
        if isinstance(current, nn.Parameter):
            with torch.no_grad():
                current.copy_(value)
        else:
            self.wrapper.register_buffer(key, value.detach(), persistent=False)

    scale = property(lambda self: self._get("scale"), lambda self, v: self._set("scale", v))
    zero_point = property(lambda self: self._get("zero_point"), lambda self, v: self._set("zero_point", v))
    tracked_min = property(lambda self: self._get("tracked_min"), lambda self, v: self._set("tracked_min", v))
    tracked_max = property(lambda self: self._get("tracked_max"), lambda self, v: self._set("tracked_max", v))

    def make_parameter(self, what: str, value: torch.Tensor) -> nn.Parameter:
        """Turn ``scale`` (or another tensor) into a learned parameter of the wrapper."""
        key = f"{self.name}_{what}"
        self.wrapper._buffers.pop(key, None)
        device = next(self.wrapper.module.parameters(), value).device  # the module may be on a GPU
        param = nn.Parameter(value.detach().clone().float().to(device))
        self.wrapper.register_parameter(key, param)
        return param

    # --- granularity ----------------------------------------------------------------------
    def kernel(self, shape: Sequence[int]) -> list[int]:
        """Block kernel of this target on ``shape`` ('default' is per tensor here)."""
        return quant_kernel(self.granularity, shape, self.is_activation, self.layout)

    def reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        """Per-block ``min`` / ``max`` / ``absmean`` of ``t``, shaped like the scale."""
        kernel = self.kernel(t.shape)
        blocks = to_blocks(t.detach().float(), kernel)
        value = _REDUCTIONS[op](blocks)
        if all(k == -1 for k in kernel):
            return value.reshape(())
        return value.reshape(reduced_shape(kernel, t.shape))

    def broadcast(self, value: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``value`` (shaped like the scale) expanded so it broadcasts against ``t``."""
        if value.dim() == 0:
            return value.to(t.dtype)
        return expand_mask(value, self.kernel(t.shape), None).to(t.dtype)

    def elements_per_scale(self, t: torch.Tensor) -> int:
        return max(1, t.numel() // max(1, self.scale.numel() if self.scale is not None else 1))

    # --- range and scale ------------------------------------------------------------------
    def track(self, lo: torch.Tensor, hi: torch.Tensor, mode: str, decay: float = 0.99) -> None:
        """Update the tracked range: ``current`` (replace), ``minmax`` (widen), ``ema``."""
        old_lo, old_hi = self.tracked_min, self.tracked_max
        if old_lo is None or mode == "current" or old_lo.shape != lo.shape:
            self.tracked_min, self.tracked_max = lo, hi
        elif mode == "minmax":
            self.tracked_min, self.tracked_max = torch.minimum(old_lo, lo), torch.maximum(old_hi, hi)
        else:
            self.tracked_min = old_lo * decay + lo * (1 - decay)
            self.tracked_max = old_hi * decay + hi * (1 - decay)

    def update_scale(self) -> None:
        """Scale and zero point from the tracked range, by the target's scheme."""
        if self.tracked_min is None:
            return
        self.scale, self.zero_point = SCHEMES[self.scheme](self.tracked_min, self.tracked_max, self.dtype)

    # --- forward --------------------------------------------------------------------------
    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.fold is not None:
            tensor = self.fold(tensor)
        self.last_shape = tuple(tensor.shape)
        if self.observer is not None:
            self.observer(self, tensor)
        return QUANT_METHODS[self.method](tensor, self)

    def calibration(self) -> dict[str, Any] | None:
        """This target's entry of the calibration config (NNI's format), or None if never observed."""
        if self.scale is None:
            return None
        plain = lambda t: t.detach().cpu().clone() if t is not None else None  # noqa: E731
        scale = plain(self.scale).float().abs().clamp(min=MIN_SCALE)  # a learned scale acts by its magnitude
        return {"scale": scale, "zero_point": plain(self.zero_point).round().to(torch.int32),
                "quant_dtype": self.dtype.name, "quant_scheme": self.scheme, "quant_bits": self.quant_bits,
                "tracked_min": plain(self.tracked_min), "tracked_max": plain(self.tracked_max)}


def quant_kernel(granularity: Any, shape: Sequence[int], is_activation: bool, layout: Any) -> list[int]:
    """'default': one scale per tensor; 'per_channel': per output channel of a parameter, per
    channel of an activation (dim 1 of a conv's or BatchNorm's, so a scale is [1, C, 1, 1] as in
    NNI; the last dim of a Linear's); 'out_channel' / 'in_channel' / block lists as in pruning."""
    if granularity in (None, "default"):
        return [-1] * len(shape)
    if granularity == "per_channel" and not is_activation:
        granularity = "out_channel"
    return resolve_kernel(granularity, shape, is_activation=is_activation, out_dim=layout.out_dim,
                          in_dim=layout.in_dim, channel_dim=layout.activation_dim(len(shape)))


def _check_quant_target(target: TargetConfig, module: nn.Module) -> None:
    s = target.setting
    where = f"{target.module_name}.{target.target_name}"
    if s.get("quant_dtype") is None:
        return
    try:
        parse_dtype(s["quant_dtype"])
    except ValueError as exc:
        raise ConfigListError(f"{where}: {exc}.", index=target.config_index, key="quant_dtype") from None
    if s.get("quant_scheme") not in (None, *SCHEMES):
        raise ConfigListError(f"{where}: unknown quant_scheme {s['quant_scheme']!r}; use one of {sorted(SCHEMES)}.",
                              index=target.config_index, key="quant_scheme")
    granularity = s.get("granularity") or "default"
    if granularity in ("out_channel", "in_channel") and target.ref.is_activation:
        raise ConfigListError(f"{where}: {granularity!r} is for parameters; an activation takes 'default', "
                              "'per_channel' (its channel dim) or a block list.", index=target.config_index,
                              key="granularity")
    if not target.ref.is_activation:
        from ..config.templates import QuantizationSetting

        try:
            quant_kernel(granularity, getattr(module, target.target_name).shape, False,
                         QuantizationSetting.layout(type(module).__name__))
        except GranularityError as exc:
            raise ConfigListError(f"{where}: {exc}.", index=target.config_index, key="granularity") from None


def _is_active(setting: dict[str, Any], config: dict[str, Any]) -> bool:
    return setting.get("quant_dtype") is not None


register_kind_checks("quantization", _check_quant_target, _is_active)
