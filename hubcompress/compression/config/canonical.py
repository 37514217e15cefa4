"""Turn a config list into one setting per (module, target): template → shortcuts →
target_settings → target_names, with every mistake reported by config index and key."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ...errors import ConfigListError
from .keys import KEY_SPECS, check_key, translate_nni2
from .selection import compressible_modules, select_modules
from .target_names import TargetRef, parse_target
from .templates import SETTINGS


@dataclass
class TargetConfig:
    """The resolved setting of one target, and the config dict it came from."""

    module_name: str
    ref: TargetRef
    setting: dict[str, Any]
    config_index: int

    @property
    def target_name(self) -> str:
        return self.ref.name


CanonicalConfig = dict[str, dict[str, TargetConfig]]
# Per compressor kind: checks of one resolved target, and whether it compresses anything.
TARGET_CHECKS: dict[str, Callable[[TargetConfig, nn.Module], None]] = {}
IS_ACTIVE: dict[str, Callable[[dict[str, Any], dict[str, Any]], bool]] = {}  # (target setting, config)


def register_kind_checks(kind: str, check: Callable[[TargetConfig, nn.Module], None],
                         is_active: Callable[[dict[str, Any], dict[str, Any]], bool]) -> None:
    TARGET_CHECKS[kind] = check
    IS_ACTIVE[kind] = is_active


def canonicalize_config_list(model: nn.Module, config_list: list[dict[str, Any]], kind: str) -> CanonicalConfig:
    """Resolve ``config_list`` against ``model`` for a compressor of ``kind``.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        >>> cfg = canonicalize_config_list(net, [{"op_types": ["Linear"], "sparse_ratio": 0.5}], "pruning")
        >>> cfg["0"]["weight"].setting["sparse_ratio"], cfg["0"]["bias"].setting.get("sparse_ratio")
        (0.5, None)
    """
    if not isinstance(config_list, (list, tuple)) or not config_list:
        raise ConfigListError("a config list must be a non-empty list of dicts.")
    setting_cls = SETTINGS[kind]
    modules = compressible_modules(model)
    result: CanonicalConfig = {}
    for index, config in enumerate(translate_nni2(list(config_list))):
        for key, value in config.items():
            check_key(index, key, value, kind)
        selected = select_modules(index, config, modules)
        new_targets, touched_active = 0, False
        for module_name in selected:
            module = modules[module_name]
            for target in _resolve_module(index, config, module_name, module, setting_cls, kind):
                previous = result.setdefault(module_name, {}).get(target.target_name)
                if previous is not None:
                    warnings.warn(
                        f"config_list[{index}] touches {module_name}.{target.target_name}, already set by "
                        f"config_list[{previous.config_index}]; the earlier setting is kept.",
                        stacklevel=2,
                    )
                    continue
                result[module_name][target.target_name] = target
                new_targets += 1
                touched_active |= IS_ACTIVE[kind](target.setting, config)
        if new_targets and not touched_active:
            raise ConfigListError(
                f"compresses nothing: none of its targets in {selected[:5]}"
                f"{'...' if len(selected) > 5 else ''} gets a setting that does {kind} "
                f"({_activity_hint(kind)}).",
                index=index,
            )
    _check_aligns(result, modules)
    return {m: t for m, t in result.items() if t}


def _activity_hint(kind: str) -> str:
    return {"pruning": "set sparse_ratio or sparse_threshold",
            "quantization": "set quant_dtype, e.g. 'int8', on the config or in target_settings"}.get(kind, "check its keys")


def _resolve_module(index: int, config: dict[str, Any], module_name: str, module: nn.Module,
                    setting_cls: Any, kind: str) -> list[TargetConfig]:
    cls_name = type(module).__name__
    template = setting_cls.get(cls_name)
    target_names = config.get("target_names")
    target_settings = config.get("target_settings") or {}
    if template is None and not target_names:
        raise ConfigListError(
            f"module {module_name!r} is a {cls_name}, which has no {kind} template. Register one, e.g. "
            f"{setting_cls.__name__}.register({cls_name!r}, {{'weight': {setting_cls.__name__}.weight_default()}})"
            f" (from hubcompress.compression.config.templates), or name its targets with target_names.",
            index=index,
            key="op_types" if config.get("op_types") else "op_names",
        )
    template = template or {}
    wanted = list(dict.fromkeys(list(template) + list(target_names or []) + list(target_settings)))
    shortcuts = {k: v for k, v in config.items() if k in KEY_SPECS and KEY_SPECS[k].target_level}
    out = []
    for name in wanted:
        explicit = name in (target_names or []) or name in target_settings
        ref = parse_target(module, name)
        if isinstance(ref, str):
            if explicit:
                raise ConfigListError(f"module {module_name!r}: {ref}.", index=index,
                                      key="target_names" if name in (target_names or []) else "target_settings")
            continue  # a template target this instance lacks (Linear without bias)
        if target_names and name not in target_names:
            continue
        setting = copy.deepcopy(template.get(name) or setting_cls.target_default(name))
        for key, value in shortcuts.items():
            if key in setting:
                setting[key] = copy.deepcopy(value)
        for key, value in (target_settings.get(name) or {}).items():
            check_key(index, key, value, kind)
            setting[key] = copy.deepcopy(value)
        target = TargetConfig(module_name, ref, setting, index)
        if kind in TARGET_CHECKS:
            TARGET_CHECKS[kind](target, module)
        out.append(target)
    return out


def _check_aligns(result: CanonicalConfig, modules: dict[str, nn.Module]) -> None:
    for module_name, targets in result.items():
        for target in targets.values():
            align = target.setting.get("align")
            if not align:
                continue
            source_module = align.get("module_name") or module_name
            if source_module not in modules:
                raise ConfigListError(
                    f"{module_name}.{target.target_name} aligns to module {source_module!r}, which does not exist.",
                    index=target.config_index, key="align")
            source = result.get(source_module, {}).get(align["target_name"])
            if source is None:
                problem = parse_target(modules[source_module], align["target_name"])
                why = problem if isinstance(problem, str) else "it is not configured by any config of this list"
                raise ConfigListError(
                    f"{module_name}.{target.target_name} aligns to {source_module}.{align['target_name']}, but {why}.",
                    index=target.config_index, key="align")
            if source.ref.is_activation:
                raise ConfigListError(
                    f"{module_name}.{target.target_name} aligns to activation {align['target_name']}; align to a "
                    "parameter or buffer.", index=target.config_index, key="align")
            source_shape = getattr(modules[source_module], source.target_name).shape
            if any(d >= len(source_shape) or d < -len(source_shape) for d in align["dims"]):
                raise ConfigListError(
                    f"align dims {align['dims']} are out of range for {source_module}.{source.target_name} "
                    f"of shape {tuple(source_shape)}.", index=target.config_index, key="align")
