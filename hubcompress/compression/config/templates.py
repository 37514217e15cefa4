"""Per-module-class target templates: the default setting of every target a module class has.

A template says which targets of a module a compressor touches when the config names none, and
each target's default keys; a shortcut key in a config reaches only targets whose template has
that key (so ``sparse_ratio`` reaches ``weight``, not ``bias``). Custom classes are added with
``register``.

Example:
    >>> from hubcompress.compression.config.templates import PruningSetting
    >>> PruningSetting.register("MyProjection", {"weight": PruningSetting.weight_default()})
    >>> sorted(PruningSetting.get("MyProjection"))
    ['weight']
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

_PRUNING_KEYS = {
    "sparse_ratio": None,
    "sparse_threshold": None,
    "max_sparse_ratio": None,
    "min_sparse_ratio": None,
    "global_group_id": None,
    "dependency_group_id": None,
    "internal_metric_block": None,
    "granularity": "default",
    "apply_method": "mul",
    "align": None,
}


@dataclass(frozen=True)
class ChannelLayout:
    """Which dim of a module's ``weight`` holds its output and its input channels.

    Linear and Conv keep outputs in dim 0; ConvTranspose and transformers' ``Conv1D`` in dim 1;
    an Embedding's output features (the embedding width) are dim 1.
    """

    out_dim: int = 0
    in_dim: int = 1
    channels_first: bool = False  # activations are [batch, channels, *spatial] (convolutions, BatchNorm, pooling)

    def activation_dim(self, ndim: int) -> int:
        """The channel dim of an ``ndim``-dim activation, which ``per_channel`` means: dim 1 for
        channels-first modules and for any tensor of 4+ dims (torch's NCHW / NCDHW), else the
        last dim (``[batch, seq, hidden]``; both agree on ``[batch, features]``)."""
        return 1 if ndim >= 2 and (self.channels_first or ndim >= 4) else ndim - 1


# Module classes whose inputs and outputs are channels-first ([batch, channels, *spatial]).
_CHANNELS_FIRST = re.compile(r"(Lazy)?(Conv|ConvTranspose|BatchNorm|InstanceNorm)[123]d|SyncBatchNorm|GroupNorm"
                             r"|(Adaptive)?(Max|Avg)Pool[123]d|LPPool[123]d")


@dataclass
class _Registry:
    kind: str
    templates: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    layouts: dict[str, ChannelLayout] = field(default_factory=dict)


class _Setting:
    """Shared behaviour of the pruning / quantization / distillation template registries."""

    _registry: ClassVar[_Registry]

    @classmethod
    def register(cls, module_cls_name: str, setting: dict[str, dict[str, Any]], *,
                 out_dim: int = 0, in_dim: int = 1) -> None:
        """Register (or replace) the template of a module class, by its ``__name__``."""
        cls._registry.templates[module_cls_name] = copy.deepcopy(setting)
        cls._registry.layouts[module_cls_name] = ChannelLayout(out_dim, in_dim)

    @classmethod
    def get(cls, module_cls_name: str) -> dict[str, dict[str, Any]] | None:
        """A deep copy of the class's template, or None when the class is not registered."""
        template = cls._registry.templates.get(module_cls_name)
        return copy.deepcopy(template) if template is not None else None

    @classmethod
    def layout(cls, module_cls_name: str) -> ChannelLayout:
        layout = cls._registry.layouts.get(module_cls_name, ChannelLayout())
        return replace(layout, channels_first=bool(_CHANNELS_FIRST.fullmatch(module_cls_name)))

    @classmethod
    def registered(cls) -> list[str]:
        return sorted(cls._registry.templates)

    @classmethod
    def target_default(cls, target_name: str) -> dict[str, Any]:
        """The setting a target gets when the config names it but the template lacks it."""
        raise NotImplementedError


class PruningSetting(_Setting):
    """Pruning templates (NNI 3.0's ``PruningSetting``, plus LayerNorm, GroupNorm and Conv1D)."""

    _registry = _Registry("pruning")

    @staticmethod
    def weight_default() -> dict[str, Any]:
        return dict(_PRUNING_KEYS)

    @staticmethod
    def aligned_default(target_name: str = "weight", dims: list[int] | None = None) -> dict[str, Any]:
        return {"align": {"module_name": None, "target_name": target_name, "dims": dims or [0]},
                "apply_method": "mul"}

    @classmethod
    def target_default(cls, target_name: str) -> dict[str, Any]:
        return cls.weight_default()


def _register_builtin_pruning() -> None:
    weight_and_bias = lambda out_dim: {  # noqa: E731 - a tiny template factory
        "weight": PruningSetting.weight_default(),
        "bias": PruningSetting.aligned_default("weight", [out_dim]),
    }
    for name in ("Linear", "Conv1d", "Conv2d", "Conv3d"):
        PruningSetting.register(name, weight_and_bias(0), out_dim=0, in_dim=1)
    for name in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"):
        PruningSetting.register(name, weight_and_bias(1), out_dim=1, in_dim=0)
    # transformers' Conv1D (GPT-2) stores weight as [in, out].
    PruningSetting.register("Conv1D", weight_and_bias(1), out_dim=1, in_dim=0)
    for name in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm"):
        PruningSetting.register(name, weight_and_bias(0), out_dim=0, in_dim=0)
    PruningSetting.register("Embedding", {"weight": PruningSetting.weight_default()},
                            out_dim=1, in_dim=0)


_register_builtin_pruning()

_QUANT_KEYS = {"quant_dtype": None, "quant_scheme": None, "granularity": "default", "apply_method": None}


class QuantizationSetting(_Setting):
    """Quantization templates (NNI 3.0's ``QuantizationSetting``, plus Conv1D, Embedding,
    LayerNorm and the common activation functions). ``quant_scheme`` None means symmetric for
    parameters and affine for activations; ``apply_method`` None means the quantizer's own.

    Example:
        >>> sorted(QuantizationSetting.get("Linear"))
        ['_input_', '_output_', 'bias', 'weight']
    """

    _registry = _Registry("quantization")

    @staticmethod
    def target_default_keys() -> dict[str, Any]:
        return dict(_QUANT_KEYS)

    @classmethod
    def target_default(cls, target_name: str) -> dict[str, Any]:
        return cls.target_default_keys()


def _register_builtin_quantization() -> None:
    full = {t: QuantizationSetting.target_default_keys() for t in ("_input_", "weight", "bias", "_output_")}
    activation = {t: QuantizationSetting.target_default_keys() for t in ("_input_", "_output_")}
    for name in ("Linear", "Conv1d", "Conv2d", "Conv3d", "BatchNorm1d", "BatchNorm2d", "LayerNorm"):
        QuantizationSetting.register(name, full, out_dim=0, in_dim=1)
    for name in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Conv1D"):
        QuantizationSetting.register(name, full, out_dim=1, in_dim=0)
    QuantizationSetting.register("Embedding", {"weight": QuantizationSetting.target_default_keys()},
                                 out_dim=1, in_dim=0)
    for name in ("ReLU", "ReLU6", "Hardtanh", "GELU", "SiLU", "Tanh", "Sigmoid", "Softmax",
                 "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool2d"):
        QuantizationSetting.register(name, activation)


_register_builtin_quantization()

_DISTILL_KEYS = {"lambda": 1.0, "link": "auto", "apply_method": "mse", "temperature": 2.0}


class DistillationSetting(_Setting):
    """Distillation templates: every module class has ``_output_`` (NNI 3.0), so ``get`` answers
    for any class; ``temperature`` is used by ``apply_method: kl`` (NNI fixed it at 2).

    Example:
        >>> DistillationSetting.get("AnyModuleAtAll")["_output_"]["apply_method"]
        'mse'
    """

    _registry = _Registry("distillation")

    @staticmethod
    def target_default_keys() -> dict[str, Any]:
        return dict(_DISTILL_KEYS)

    @classmethod
    def get(cls, module_cls_name: str) -> dict[str, dict[str, Any]]:
        return super().get(module_cls_name) or {"_output_": cls.target_default_keys()}

    @classmethod
    def target_default(cls, target_name: str) -> dict[str, Any]:
        return cls.target_default_keys()


SETTINGS: dict[str, type[_Setting]] = {"pruning": PruningSetting}


def register_setting(kind: str, setting_cls: type[_Setting]) -> None:
    """Add the template registry of another compressor kind (quantization, distillation)."""
    SETTINGS[kind] = setting_cls


register_setting("quantization", QuantizationSetting)
register_setting("distillation", DistillationSetting)
