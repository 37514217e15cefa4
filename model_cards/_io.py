"""Atomic file writes: a reader (or a rerun after a crash) never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, fill: Callable[[BinaryIO], None]) -> Path:
    """Write `path` by calling `fill` on a temp file in the same folder, then `os.replace` it.

    The temp file lives next to the target because `os.replace` is only atomic within one
    file system.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = write_atomic(target, lambda f: f.write(b"hi"))
        >>> target.read_bytes()
        b'hi'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        _default_mode(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        # Leave nothing behind on failure, not even the temp file.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = write_text_atomic(pathlib.Path(tempfile.mkdtemp()) / "b.md", "# hi")
        >>> p.read_text()
        '# hi'
    """
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data))


def _default_mode(path: str) -> None:
    """Give a file made by mkstemp (mode 0600) the mode a plain open() would: published files must be readable."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
