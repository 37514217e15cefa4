"""Write a file so that readers see either the old file or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_output_path(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final_path``; on success move it into place with ``os.replace``.

    The temporary file sits in the same folder because ``os.replace`` is only atomic within one
    file system. On any exception the temporary file is removed and ``final_path`` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> from exporters.onnx.atomic_files import atomic_output_path
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
        >>> with atomic_output_path(target) as tmp:
        ...     _ = tmp.write_bytes(b"graph")
        >>> target.read_bytes()
        b'graph'
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _default_mode(tmp)
        os.replace(tmp, final)
        logger.debug("wrote %s", final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _default_mode(path: Path) -> None:
    """Give a file made by mkstemp (mode 0600) the mode a plain open() would: published files must be readable."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
