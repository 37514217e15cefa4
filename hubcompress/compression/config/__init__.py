"""Config lists: keys, module selection, per-class templates and canonicalisation."""

from __future__ import annotations

from .canonical import CanonicalConfig, TargetConfig, canonicalize_config_list, register_kind_checks
from .keys import HubcompressDeprecationWarning, translate_nni2
from .selection import compressible_modules, select_modules
from .target_names import TargetRef, TargetType, parse_target
from .templates import ChannelLayout, DistillationSetting, PruningSetting, QuantizationSetting, register_setting

__all__ = [
    "CanonicalConfig",
    "ChannelLayout",
    "DistillationSetting",
    "HubcompressDeprecationWarning",
    "PruningSetting",
    "QuantizationSetting",
    "TargetConfig",
    "TargetRef",
    "TargetType",
    "canonicalize_config_list",
    "compressible_modules",
    "parse_target",
    "register_kind_checks",
    "register_setting",
    "select_modules",
    "translate_nni2",
]
