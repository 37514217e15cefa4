"""The one exception hierarchy of hubcompress.

Every message says what failed, where (config index and key, module name, file and line), and
what to do about it.

Example:
    >>> from hubcompress.errors import ConfigListError, HubcompressError
    >>> issubclass(ConfigListError, HubcompressError)
    True
"""

from __future__ import annotations


class HubcompressError(Exception):
    """Base class of every error hubcompress raises on purpose."""


class ConfigListError(HubcompressError, ValueError):
    """A compression config list is wrong: the message names the config index and key."""

    def __init__(self, message: str, *, index: int | None = None, key: str | None = None):
        where = []
        if index is not None:
            where.append(f"config_list[{index}]")
        if key is not None:
            where.append(f"key {key!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.index = index
        self.key = key


class CompressionError(HubcompressError):
    """A compressor was used in a way it does not support (wrong order of calls, missing evaluator)."""


class ReplacementError(HubcompressError):
    """Speedup met a module it cannot replace with a smaller one."""


class HubError(HubcompressError):
    """Loading from or pushing to a model hub failed."""


class ServingError(HubcompressError):
    """Serving a model failed: the folder lacks a file the server needs, or a request could not be run."""


class DataError(HubcompressError, ValueError):
    """Loading a recipe's data failed: the message names the file, split or column and what to do."""


class CheckpointError(HubcompressError):
    """A checkpoint cannot be written or read: the message names the file or module and what to do."""
