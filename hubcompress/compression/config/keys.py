"""The keys a config list may hold, what type each takes, and the NNI 2.x keys we translate.

A key spec belongs to one or more compressor kinds (``pruning``, ``quantization``,
``distillation``); a key of another kind in a pruner's config list is an error that says which
compressor takes it.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from ...errors import ConfigListError

SELECTION_KEYS = (
    "op_types",
    "op_names",
    "op_names_re",
    "exclude_op_types",
    "exclude_op_names",
    "exclude_op_names_re",
)


class HubcompressDeprecationWarning(FutureWarning):
    """An NNI 2.x config key was translated; shown to end users (FutureWarning is not hidden)."""


def _is_str_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def _check_str_list(v: Any) -> str | None:
    return None if _is_str_list(v) else "must be a list of strings"


def _check_ratio(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"must be a number in [0, 1], got {type(v).__name__} {v!r}"
    if not 0.0 <= float(v) <= 1.0:
        return f"must be in [0, 1], got {v}; a ratio is the fraction of the target that is masked"
    return None


def _check_number(v: Any) -> str | None:
    if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        return None
    return f"must be a number, got {type(v).__name__} {v!r}"


def _check_positive_number(v: Any) -> str | None:
    if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
        return None
    return f"must be a positive number, got {v!r}"


def _check_group_id(v: Any) -> str | None:
    if v is None or isinstance(v, (int, str)) and not isinstance(v, bool):
        return None
    return f"must be an int or a string, got {type(v).__name__}"


def _check_positive_int(v: Any) -> str | None:
    if v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return None
    return f"must be a positive int, got {v!r}"


GRANULARITY_WORDS = ("default", "out_channel", "in_channel", "per_channel")


def _check_granularity(v: Any) -> str | None:
    if isinstance(v, str):
        if v in GRANULARITY_WORDS:
            return None
        close = difflib.get_close_matches(v, GRANULARITY_WORDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown granularity {v!r}{hint}; use one of {list(GRANULARITY_WORDS)} or a block kernel list like [64, -1]"
    if isinstance(v, (list, tuple)) and v and all(
        isinstance(x, int) and not isinstance(x, bool) and (x == -1 or x >= 1) for x in v
    ):
        return None
    return "must be one of 'default', 'out_channel', 'in_channel', 'per_channel' or a list of block sizes (ints >= 1, or -1 for a whole dim)"


def _check_align(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        return "must be a dict {module_name: str | None, target_name: str, dims: [int, ...]}"
    extra = set(v) - {"module_name", "target_name", "dims"}
    if extra:
        return f"has unknown keys {sorted(extra)}; allowed: module_name, target_name, dims"
    if not isinstance(v.get("target_name"), str):
        return "needs 'target_name' (a string: the target whose mask this one follows)"
    if v.get("module_name") is not None and not isinstance(v["module_name"], str):
        return "'module_name' must be a string or None (None = the same module)"
    dims = v.get("dims")
    if not (isinstance(dims, (list, tuple)) and all(isinstance(d, int) for d in dims)):
        return "needs 'dims' (a list of ints: the dims of the source target to follow)"
    return None


def _check_str(v: Any) -> str | None:
    return None if v is None or isinstance(v, str) else f"must be a string, got {type(v).__name__}"


def _check_link(v: Any) -> str | None:
    if isinstance(v, str) or _is_str_list(v):
        return None
    return "must be a teacher module name, a list of names, or 'auto'"


def _check_fuse_names(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and all(_is_str_list(t) for t in v):
        return None
    return "must be a list of tuples of module names, e.g. [['conv1', 'bn1', 'relu1']]"


def _check_dict(v: Any) -> str | None:
    return None if isinstance(v, dict) else f"must be a dict, got {type(v).__name__}"


@dataclass(frozen=True)
class KeySpec:
    """What one config key accepts, and for which kinds of compressor."""

    kinds: frozenset[str]
    check: Callable[[Any], str | None]
    target_level: bool = True  # copied into targets as a shortcut


_ALL = frozenset({"pruning", "quantization", "distillation"})
_P = frozenset({"pruning"})
_Q = frozenset({"quantization"})
_D = frozenset({"distillation"})

KEY_SPECS: dict[str, KeySpec] = {
    **{k: KeySpec(_ALL, _check_str_list, target_level=False) for k in SELECTION_KEYS},
    "target_names": KeySpec(_ALL, _check_str_list, target_level=False),
    "target_settings": KeySpec(_ALL, _check_dict, target_level=False),
    "sparse_ratio": KeySpec(_P, _check_ratio),
    "sparse_threshold": KeySpec(_P, _check_number),
    "max_sparse_ratio": KeySpec(_P, _check_ratio),
    "min_sparse_ratio": KeySpec(_P, _check_ratio),
    "global_group_id": KeySpec(_P, _check_group_id),
    "dependency_group_id": KeySpec(_P, _check_group_id),
    "internal_metric_block": KeySpec(_P, _check_positive_int),
    "granularity": KeySpec(_P | _Q, _check_granularity),
    "align": KeySpec(_P, _check_align),
    "apply_method": KeySpec(_ALL, _check_str),
    "quant_dtype": KeySpec(_Q, _check_str),
    "quant_scheme": KeySpec(_Q, _check_str),
    "fuse_names": KeySpec(_Q, _check_fuse_names, target_level=False),
    "lambda": KeySpec(_D, _check_number),
    "link": KeySpec(_D, _check_link),
    "temperature": KeySpec(_D, _check_positive_number),
}

APPLY_METHODS = {
    "pruning": ("mul", "add", "bypass"),
    "quantization": ("bypass", "clamp_round", "qat_clamp_round"),
    "distillation": ("mse", "kl"),
}


def closest(word: str, choices: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """The choices nearest to ``word`` by spelling, best first."""
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)


def check_key(index: int, key: str, value: Any, kind: str) -> None:
    """Raise a ConfigListError if ``key`` is unknown, of another compressor kind, or ill-typed."""
    spec = KEY_SPECS.get(key)
    if spec is None:
        valid = [k for k, s in KEY_SPECS.items() if kind in s.kinds]
        near = closest(key, valid, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigListError(
            f"unknown key. {hint}Valid keys for a {kind} config: {', '.join(sorted(valid))}.",
            index=index,
            key=key,
        )
    if kind not in spec.kinds:
        owners = " / ".join(sorted(spec.kinds))
        raise ConfigListError(
            f"is a {owners} key and this is a {kind} config list; give it to a "
            f"{owners} compressor (chain it with from_compressor) or remove it.",
            index=index,
            key=key,
        )
    problem = spec.check(value)
    if problem:
        raise ConfigListError(problem + ".", index=index, key=key)
    if key == "apply_method" and value is not None and value not in APPLY_METHODS[kind]:
        raise ConfigListError(
            f"unknown apply_method {value!r} for {kind}; use one of {list(APPLY_METHODS[kind])}.",
            index=index,
            key=key,
        )


# --- NNI 2.x ------------------------------------------------------------------------------

_QUANT_TYPE_TO_TARGET = {"weight": "weight", "input": "_input_", "output": "_output_", "bias": "bias"}


def translate_nni2(config_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite NNI 2.x keys (``sparsity``, ``exclude``, ``total_sparsity``, ``quant_types``,
    ...) into NNI 3.0 keys, warning once per key.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     translate_nni2([{"sparsity": 0.5, "op_types": ["Linear"]}])
        [{'op_types': ['Linear'], 'sparse_ratio': 0.5}]
    """
    out: list[dict[str, Any]] = []
    exclusions: list[dict[str, Any]] = []
    for index, config in enumerate(config_list):
        if not isinstance(config, dict):
            raise ConfigListError(
                f"must be a dict, got {type(config).__name__}; a config list is a list of dicts.",
                index=index,
            )
        config = dict(config)
        if config.pop("exclude", False):
            _warn("exclude", "exclude_op_names / exclude_op_types in the other configs")
            exclusions.append(config)
            continue
        for old, new in (("sparsity", "sparse_ratio"), ("sparsity_per_layer", "sparse_ratio"),
                         ("max_sparsity_per_layer", "max_sparse_ratio")):
            if old in config:
                _warn(old, new)
                if new in config:
                    raise ConfigListError(f"sets both {old!r} (NNI 2.x) and {new!r}; keep {new!r}.",
                                          index=index, key=old)
                config[new] = config.pop(old)
        if "total_sparsity" in config:
            _warn("total_sparsity", "sparse_ratio with a global_group_id")
            config["sparse_ratio"] = config.pop("total_sparsity")
            config.setdefault("global_group_id", f"nni2_total_sparsity_{index}")
        if "op_partial_names" in config:
            _warn("op_partial_names", "op_names_re")
            partial = config.pop("op_partial_names")
            config.setdefault("op_names_re", [])
            config["op_names_re"] = list(config["op_names_re"]) + [f".*{p}" for p in partial]
        if "quant_types" in config:
            _warn("quant_types", "target_names")
            types = config.pop("quant_types")
            config["target_names"] = [_QUANT_TYPE_TO_TARGET.get(t, t) for t in types]
        if "quant_bits" in config:
            _warn("quant_bits", "quant_dtype in target_settings")
            bits = config.pop("quant_bits")
            settings = config.setdefault("target_settings", {})
            items = bits.items() if isinstance(bits, dict) else (
                (t, bits) for t in config.get("target_names", ["weight"]))
            for qtype, b in items:
                target = _QUANT_TYPE_TO_TARGET.get(qtype, qtype)
                settings.setdefault(target, {})["quant_dtype"] = f"int{b}"
        out.append(config)
    for config in exclusions:
        for config_out in out:
            for key in ("op_names", "op_types"):
                if key in config:
                    merged = list(config_out.get(f"exclude_{key}", [])) + list(config[key])
                    config_out[f"exclude_{key}"] = merged
    return out


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"config key {old!r} is NNI 2.x; translated to {new}. Update the config list.",
        HubcompressDeprecationWarning,
        stacklevel=4,
    )
