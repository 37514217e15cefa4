"""The base of every quantizer: target spaces, observation, fusion, calibration config, bake."""

from __future__ import annotations

import collections
import copy
import logging
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from ...errors import CompressionError
from ..compressor import Compressor
from ..distributed import all_reduce_min_max
from ..evaluator.base import Evaluator
from ..wrapper import ModuleWrapper
from .fusion import Fusion, bake_fusion, build_fusions
from .target_space import QuantizationTargetSpace

logger = logging.getLogger(__name__)

CalibrationConfig = dict[str, dict[str, dict[str, Any]]]

# Quantizers by recipe name (``register_quantizer``).
QUANTIZERS: dict[str, type[Quantizer]] = {}


def register_quantizer(name: str) -> Callable[[type[Quantizer]], type[Quantizer]]:
    def deco(cls: type[Quantizer]) -> type[Quantizer]:
        QUANTIZERS[name] = cls
        return cls
    return deco


class Quantizer(Compressor):
    """Shared machinery. ``compress()`` returns ``(model, calibration_config)`` with
    ``{module: {target: {scale, zero_point, quant_dtype, quant_scheme, quant_bits, tracked_min,
    tracked_max}}}`` (NNI's format; tensors on the CPU).

    A config's ``apply_method`` picks the fake-quantize behaviour of a target: ``bypass`` (only
    observe), ``clamp_round`` (quantize, no gradient through rounding) or ``qat_clamp_round``
    (quantize with the quantizer's training gradient: straight-through, LSQ, DoReFa, ...);
    unset means the quantizer's own.

    ``Quantizer`` itself (NNI's simulation quantizer) needs no evaluator: it fake-quantizes with
    the scales it is given by ``update_calibration_config`` (weights are measured directly), so
    a calibration config computed elsewhere can be checked on a model.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 2))
        >>> sim = Quantizer(net, [{"op_names": ["0"], "target_names": ["_output_"], "quant_dtype": "int8"}])
        >>> sim.update_calibration_config({"0": {"_output_": {"scale": torch.tensor(0.5),
        ...     "zero_point": torch.tensor(0), "quant_dtype": "int8", "quant_scheme": "affine", "quant_bits": 8}}})
        >>> net(torch.randn(3, 4)).mul(2).frac().abs().max().item()  # on the grid of 0.5
        0.0
    """

    kind = "quantization"
    target_space_cls = QuantizationTargetSpace
    needs_training = False  # the quantizers that learn or observe set True
    training_method: ClassVar[str] = "clamp_round"
    _target_spaces: dict[str, dict[str, QuantizationTargetSpace]]

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator | None = None, *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        super().__init__(model, config_list, evaluator, existing_wrappers)
        self._handles: list[Any] = []
        self._collecting = False
        self._steps = 0
        with self._withdrawn_on_error():
            self.fusions: list[Fusion] = build_fusions(model, config_list, self._target_spaces, self._wrappers)
        for space in self._spaces():
            if not space.is_activation:
                self._observe_weight(space)

    def _keeps_target(self, setting: dict[str, Any]) -> bool:
        return setting.get("quant_dtype") is not None

    def _spaces(self) -> Iterator[QuantizationTargetSpace]:
        for spaces in self._target_spaces.values():
            yield from spaces.values()

    def method_for(self, space: QuantizationTargetSpace) -> str:
        """The QUANT_METHODS entry a target uses once quantizing starts."""
        return {None: self.training_method, "qat_clamp_round": self.training_method}.get(
            space.apply_method, space.apply_method)

    # --- observing ------------------------------------------------------------------------
    def effective_weight(self, space: QuantizationTargetSpace) -> torch.Tensor:
        """A parameter target as it is quantized: folded with a fused BatchNorm."""
        value = space.target.detach()
        return space.fold(value).detach() if space.fold is not None else value

    def _refresh_scale(self, space: QuantizationTargetSpace) -> None:
        """Scale and zero point from the tracked range (learned or fixed scales skip this)."""
        space.update_scale()

    def _observe_weight(self, space: QuantizationTargetSpace, value: torch.Tensor | None = None) -> None:
        with torch.no_grad():
            value = self.effective_weight(space) if value is None else value.detach()
            space.track(space.reduce(value, "min"), space.reduce(value, "max"), "current")
            self._refresh_scale(space)

    def _observe_activation(self, space: QuantizationTargetSpace, tensor: torch.Tensor, mode: str,
                            decay: float = 0.99) -> None:
        # Ranks see different batches: combine their ranges so every rank gets one scale.
        lo, hi = all_reduce_min_max(space.reduce(tensor, "min"), space.reduce(tensor, "max"))
        space.track(lo, hi, mode, decay)
        self._refresh_scale(space)

    def _observe(self, space: QuantizationTargetSpace, tensor: torch.Tensor) -> None:
        """Called by every target space on every forward while compressing."""

    def _count_step(self) -> None:
        self._steps += 1

    def _start(self) -> None:
        self._collecting = True
        self._steps = 0
        for space in self._spaces():
            space.observer = self._observe
        if self.evaluator is not None:
            self._handles += self.evaluator.patch_optimizer_step(after=[self._count_step])

    def _finish(self) -> None:
        self._collecting = False
        for space in self._spaces():
            space.observer = None
            if not space.is_activation:
                self._observe_weight(space)  # the weights after the last optimizer step
            elif space.scale is None:
                logger.warning("%s: %s.%s was never run while compressing; it has no scale and stays unquantized.",
                               type(self).__name__, space.wrapper.module_name, space.name)
            space.method = self.method_for(space)
        for h in self._handles:
            h.remove()
        self._handles = []

    # --- results --------------------------------------------------------------------------
    def update_calibration_config(self, calibration_config: CalibrationConfig) -> None:
        """Set scales and zero points from ``{module: {target: {scale, zero_point, ...}}}`` (the
        format ``get_calibration_config`` returns) and fake-quantize those targets with them.
        ``quant_dtype``, ``quant_scheme`` and ``quant_bits``, where given, must match the
        target's config; ``_input_`` and ``_input_0`` name the same target."""
        for module_name, targets in calibration_config.items():
            spaces = self._target_spaces.get(module_name)
            if spaces is None:
                raise CompressionError(f"update_calibration_config: {module_name!r} is not a module this quantizer "
                                       f"compresses (it has {sorted(self._target_spaces)[:5]}...).")
            for target_name, entry in targets.items():
                space = spaces.get(target_name) or spaces.get(_canonical_target(target_name))
                if space is None:
                    raise CompressionError(f"update_calibration_config: {module_name}.{target_name} is not a target of "
                                           f"this quantizer (targets: {sorted(spaces)}).")
                self._set_calibration(space, entry, f"{module_name}.{target_name}")

    def _set_calibration(self, space: QuantizationTargetSpace, entry: dict[str, Any], where: str) -> None:
        for key, mine in (("quant_dtype", space.dtype.name), ("quant_scheme", space.scheme),
                          ("quant_bits", space.quant_bits)):
            if entry.get(key) is not None and entry[key] != mine:
                raise CompressionError(f"update_calibration_config: {where} has {key} {entry[key]!r}, this quantizer's "
                                       f"config says {mine!r}; quantize with the config the calibration came from.")
        if entry.get("scale") is None or entry.get("zero_point") is None:
            raise CompressionError(f"update_calibration_config: {where} needs 'scale' and 'zero_point'.")
        device = space.target.device if space.target is not None else next(
            space.wrapper.module.parameters(), torch.zeros(())).device
        as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32, device=device)  # noqa: E731
        space.scale = as_tensor(entry["scale"])
        space.zero_point = as_tensor(entry["zero_point"])
        dt = space.dtype
        # Ranges that do not match the scale's shape are derived from it: NNI's pqd_fuse cuts scale
        # and zero point down to the channels speedup kept, but leaves the ranges full-size.
        fits = lambda v: v is not None and as_tensor(v).shape == space.scale.shape  # noqa: E731
        lo = entry.get("tracked_min")
        hi = entry.get("tracked_max")
        space.tracked_min = as_tensor(lo) if fits(lo) else space.scale * (dt.qmin - space.zero_point)
        space.tracked_max = as_tensor(hi) if fits(hi) else space.scale * (dt.qmax - space.zero_point)
        space.method = self.method_for(space)
        if not space.is_activation:
            space.observer = None

    def get_calibration_config(self) -> CalibrationConfig:
        """``{module: {target: {scale, zero_point, quant_dtype, quant_scheme, quant_bits,
        tracked_min, tracked_max}}}`` for every target that has a scale."""
        out: CalibrationConfig = {}
        for space in self._spaces():
            entry = space.calibration()
            if entry is not None:
                out.setdefault(space.wrapper.module_name, TargetEntries())[space.name] = entry
        return out

    def _result(self) -> CalibrationConfig:
        return self.get_calibration_config()

    def _baked_value(self, space: QuantizationTargetSpace, value: torch.Tensor) -> torch.Tensor:
        """What a parameter becomes so that plain linear quantization with the calibration
        config reproduces this quantizer (DoReFa and BNN transform the weight first)."""
        return value

    def unwrap_model(self, bake: bool = False) -> None:
        """Remove every wrapper (this quantizer's and those fused with it).

        With ``bake`` the model is left ready for an int8 export: fused BatchNorms folded into
        their leaders (and replaced by ``nn.Identity``), transformed weights written back, and
        every fused pruner's masks multiplied in, so the plain model plus
        ``get_calibration_config()`` computes what the fake-quantized model did.
        """
        if not bake:
            return super().unwrap_model()
        values: dict[tuple[str, str], torch.Tensor] = {}
        with torch.no_grad():
            for space in self._spaces():
                if not space.is_activation:
                    key = (space.wrapper.module_name, space.name)
                    values[key] = self._baked_value(space, self.effective_weight(space))
            for wrapper in self._wrappers.values():
                for space in wrapper.target_spaces.get("pruning", {}).values():
                    mask, target = getattr(space, "mask", None), space.target
                    if mask is not None and target is not None and space.apply_method == "mul":
                        key = (wrapper.module_name, space.name)
                        values[key] = values.get(key, target.detach()) * mask.to(target.dtype)
        targets = {key: _tensor_of(self._wrappers[key[0]].module, key[1]) for key in values}
        super().unwrap_model()
        with torch.no_grad():
            for key, value in values.items():
                targets[key].copy_(value)
        for fusion in self.fusions:
            bake_fusion(self.bound_model, fusion)


def _tensor_of(module: nn.Module, name: str) -> torch.Tensor:
    tensor = module._parameters.get(name) if name in module._parameters else module._buffers.get(name)
    if tensor is None:
        raise CompressionError(f"{type(module).__name__} has no tensor {name!r} to bake.")
    return tensor


class TargetEntries(dict):
    """One module's calibration entries, ``{target: entry}``. NNI names a module's first input
    and output ``_input_0`` / ``_output_0`` and its scripts look them up that way (pqd_fuse:
    ``if '_input_0' in entries``); ours are ``_input_`` / ``_output_``, so both names find the
    entry, which is listed once. Pickles as an ``OrderedDict`` (``torch.load(weights_only=True)``
    reads it back without hubcompress), deep-copies as itself."""

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (isinstance(key, str)
                                                and dict.__contains__(self, _canonical_target(key)))

    def __missing__(self, key: str) -> dict[str, Any]:
        if isinstance(key, str) and dict.__contains__(self, _canonical_target(key)):
            return dict.__getitem__(self, _canonical_target(key))
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __reduce__(self) -> tuple:
        return collections.OrderedDict, (list(self.items()),)

    def __deepcopy__(self, memo: dict) -> TargetEntries:
        return TargetEntries(copy.deepcopy(dict(self), memo))


def _canonical_target(name: str) -> str:
    """``_input_`` / ``_output_`` and their ``_0`` forms name the same target."""
    if name in ("_input_", "_output_"):
        return name + "0"
    if name in ("_input_0", "_output_0"):
        return name[:-1]
    return name
