"""A recipe copied into a scratch folder with some keys changed: the paths it names (data files, a
model folder, text sets) are made absolute first, so they still point where they did.

Example:
    >>> import pathlib, tempfile, yaml
    >>> src = pathlib.Path(tempfile.mkdtemp()) / "r.yaml"
    >>> _ = src.write_text("data: {files: {train: t.jsonl}}\\ntraining: {steps: 10}\\n")
    >>> _ = (src.parent / "t.jsonl").write_text("{}")
    >>> out = write_scratch_recipe(src, src.parent / "copy" / "r.yaml", {"training": {"seed": 2}})
    >>> data = yaml.safe_load(out.read_text())
    >>> data["training"], data["data"]["files"]["train"] == str(src.parent / "t.jsonl")
    ({'steps': 10, 'seed': 2}, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def _absolute(value: str, *bases: Path) -> str:
    """The first of ``bases / value`` that exists, made absolute; a hub id or a built-in set name
    (nothing of that name exists) stays as written."""
    path = Path(value).expanduser()
    for candidate in [path] if path.is_absolute() else [base / path for base in bases]:
        if candidate.exists():
            return str(candidate.resolve())
    return value


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif value is None:
            into.pop(key, None)
        else:
            into[key] = value


def write_scratch_recipe(source: Path, target: Path, changes: dict[str, Any]) -> Path:
    """Write ``source`` with ``changes`` merged in (a None value removes the key) to ``target``."""
    data = yaml.safe_load(source.read_text()) or {}
    # hubcompress reads data paths from the recipe's folder, then the working directory; a model folder
    # from the working directory.
    bases = (source.resolve().parent, Path.cwd())
    section = data.get("data") or {}
    for split, names in (section.get("files") or {}).items():
        section["files"][split] = ([_absolute(n, *bases) for n in names] if isinstance(names, list)
                                   else _absolute(names, *bases))
    for key in ("distill_texts",):
        if isinstance(section.get(key), str):
            section[key] = _absolute(section[key], *bases)
    model = data.get("model") or {}
    if isinstance(model.get("id"), str):
        model["id"] = _absolute(model["id"], Path.cwd())
    _merge(data, changes)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target
