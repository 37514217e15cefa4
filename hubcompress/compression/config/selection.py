"""Which modules a config dict selects, with errors for names and patterns that match nothing."""

from __future__ import annotations

import re
import warnings
from typing import Any

from torch import nn

from ...errors import ConfigListError
from .keys import closest

WRAPPER_ATTR = "_hc_wrapper"


def compressible_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every named submodule except the root and hubcompress's own wrappers."""
    return {
        name: module
        for name, module in model.named_modules()
        if name and WRAPPER_ATTR not in name.split(".")
    }


def _near(names: list[str], word: str) -> str:
    near = closest(word, names)
    return f" Closest module names: {near}." if near else ""


def select_modules(index: int, config: dict[str, Any], modules: dict[str, nn.Module]) -> list[str]:
    """Module names selected by ``config`` (NNI's rule: names ∪ patterns, ∩ types, − exclusions).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> select_modules(0, {"op_types": ["Linear"], "exclude_op_names": ["2"]},
        ...                compressible_modules(net))
        ['0']
    """
    names = list(modules)
    types_in_model = sorted({type(m).__name__ for m in modules.values()})
    op_types = config.get("op_types")
    op_names = config.get("op_names")
    op_names_re = config.get("op_names_re")
    if not (op_types or op_names or op_names_re):
        raise ConfigListError(
            "selects no module: give at least one of op_types, op_names, op_names_re.", index=index
        )
    for name in op_names or []:
        if name not in modules:
            raise ConfigListError(f"no module named {name!r}.{_near(names, name)}", index=index, key="op_names")
    if op_types:
        for t in op_types:
            if t not in types_in_model:
                near = closest(t, types_in_model)
                raise ConfigListError(
                    f"the model has no module of type {t!r}"
                    + (f" (closest: {near})" if near else "")
                    + f". Types in the model: {types_in_model}.",
                    index=index,
                    key="op_types",
                )
    if op_names or op_names_re:
        chosen = set(op_names or [])
        for pattern in op_names_re or []:
            matched = _match(index, "op_names_re", pattern, names)
            chosen.update(matched)
        if op_types:
            chosen = {n for n in chosen if type(modules[n]).__name__ in op_types}
            if not chosen:
                raise ConfigListError(
                    f"the modules named by op_names / op_names_re are none of op_types {op_types}.",
                    index=index,
                    key="op_types",
                )
    else:
        chosen = {n for n, m in modules.items() if type(m).__name__ in op_types}
    for name in config.get("exclude_op_names") or []:
        if name not in modules:
            raise ConfigListError(f"no module named {name!r}.{_near(names, name)}", index=index,
                                  key="exclude_op_names")
        chosen.discard(name)
    for pattern in config.get("exclude_op_names_re") or []:
        chosen.difference_update(_match(index, "exclude_op_names_re", pattern, names))
    for t in config.get("exclude_op_types") or []:
        if t not in types_in_model:
            warnings.warn(f"config_list[{index}]: exclude_op_types names {t!r}, which the model does not have.",
                          stacklevel=3)
        chosen = {n for n in chosen if type(modules[n]).__name__ != t}
    if not chosen:
        raise ConfigListError("selects no module once the exclusions are applied.", index=index)
    return [n for n in names if n in chosen]  # model order


def _match(index: int, key: str, pattern: str, names: list[str]) -> list[str]:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigListError(f"{pattern!r} is not a valid regular expression: {exc}.", index=index, key=key)
    matched = [n for n in names if regex.match(n)]
    if not matched:
        # Suggest names near the literal part of the pattern: usually a typo.
        literal = re.sub(r"[\\^$.*+?()\[\]{}|]", "", pattern)
        raise ConfigListError(
            f"pattern {pattern!r} matches no module (matching is anchored at the start, like re.match)."
            f"{_near(names, literal)}",
            index=index,
            key=key,
        )
    return matched
