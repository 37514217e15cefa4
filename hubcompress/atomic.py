"""Atomic writes: a reader (or a rerun after a kill) sees the old file or the whole new one.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "report.json"
    >>> _ = write_json_atomic(path, {"ok": True})
    >>> path.read_text()
    '{\\n  "ok": true\\n}\\n'
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path next to ``final`` that replaces it (``os.replace``) when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(name)
        default_mode(Path(name))
        os.replace(name, final)
    finally:
        if os.path.exists(name):
            os.unlink(name)


# Every temporary file or folder a writer of an output folder makes (here, in exporters and in
# model_cards) is named ".<name>.<random>.tmp[.<suffix>]": a resumed run removes them, push never sends them.
TEMP_MARK = ".tmp"
TEMP_PATTERNS = [".*.tmp*", "**/.*.tmp*"]  # the same rule as hub ignore patterns (fnmatch)


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of our temporaries.

    Example:
        >>> [is_temporary(n) for n in (".model.x1.tmp.onnx", ".report.json.ab.tmp", "model.onnx", ".gitattributes")]
        [True, True, False, False]
    """
    return name.startswith(".") and TEMP_MARK in name


def remove_temporaries(folder: str | os.PathLike[str]) -> list[str]:
    """Delete the temporaries a killed writer left under ``folder``; returns their relative paths."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = sorted((p for p in root.rglob(".*") if is_temporary(p.name)), key=lambda p: len(p.parts))
    removed = []
    for path in found:
        if not path.exists():  # inside a temporary folder removed a moment ago
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.relative_to(root).as_posix())
    return removed


def default_mode(path: Path) -> None:
    """Give a file made by mkstemp (mode 0600) the mode a plain open() would: published files must be readable."""
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder that becomes ``final`` (replacing an old one) when the block succeeds.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_dir(root / "stage") as tmp:
        ...     _ = (tmp / "a.txt").write_text("a")
        >>> sorted(p.name for p in (root / "stage").iterdir())
        ['a.txt']
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=TEMP_MARK))
    try:
        yield tmp
        default_mode(tmp)
        if final.exists():
            # Rename the old folder away first: two renames are as close to atomic as folders get.
            old = final.with_name(f".{final.name}.old{TEMP_MARK}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
