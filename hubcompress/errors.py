"""The one exception hierarchy of hubcompress, grouped by what went wrong; each class carries the
exit code the CLI ends with.

- 2, bad input: :class:`BadInputError` and below (a recipe, config list, data file, model folder,
  output folder, an unsupported model). Not-found errors are also ``FileNotFoundError``s.
- 3, a stage failed for a reason that is not the input: :class:`StageError` (speedup could not
  replace a module, an inference failed, a process of a torchrun / accelerate run died:
  :class:`DistributedRunError`).
- 4, the hub could not be reached, even after retries: :class:`HubUnavailableError` (also a
  ``ConnectionError``); a hub that answers "not found" or "not allowed" is bad input (2, and a
  ``FileNotFoundError`` / ``PermissionError``).
- 1, the validation gate failed: :class:`GateFailedError`.
- 130, interrupted (the CLI's, for ``KeyboardInterrupt``).

Every message says what failed, where (config index and key, module name, file and line), and
what to do about it.

Example:
    >>> from hubcompress.errors import ConfigListError, HubUnavailableError
    >>> ConfigListError("x").exit_code, HubUnavailableError("down").exit_code
    (2, 4)
    >>> issubclass(HubUnavailableError, ConnectionError)
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK, EXIT_GATE, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_HUB, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class HubcompressError(Exception):
    """Base class of every error hubcompress raises on purpose (raise a subclass: it says the kind)."""

    exit_code: ClassVar[int] = EXIT_FAILED


# --- bad input: exit 2 ---------------------------------------------------------------------------
class BadInputError(HubcompressError):
    """What the user gave is wrong; the message says which file, key or module, and the fix."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(BadInputError, ValueError):
    """A recipe is wrong; the message names the file, line and key."""


class ConfigListError(BadInputError, ValueError):
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
        self.detail = message  # without the "config_list[i], key" prefix, for callers that locate it themselves


class CompressionError(BadInputError):
    """Compressors were asked for something they cannot do (an order of calls, a missing evaluator,
    a recipe that trains without a train split)."""


class DataError(BadInputError, ValueError):
    """Loading a recipe's data failed: the message names the file, split or column and what to do."""


class ModelSourceError(BadInputError):
    """A model folder, file or hub id cannot be used: the message names it and what to do."""


class ModelNotFoundError(ModelSourceError, FileNotFoundError):
    """The model folder (or a file it needs) does not exist."""


class CheckpointError(ModelSourceError):
    """A checkpoint cannot be written or read: the message names the file or module and what to do."""


class PoolingConfigError(ModelSourceError, ValueError):
    """A folder's sentence-transformers configuration cannot be read, or asks for a module we do not
    reproduce yet: the message names the file and the module."""


class UnsupportedModelError(BadInputError):
    """The architecture or task is not supported (yet): the message lists what is."""


class MissingHeadError(ModelSourceError):
    """The model has no trained head for the recipe's task (a base model, such as a plain ``BertModel``
    run for text-classification): the message names the weights the checkpoint lacks, the model, and
    the recipe key that fine-tunes a teacher first (``teacher.finetune``)."""


class OutputFolderError(BadInputError):
    """The output folder cannot be used as asked (another recipe's run, not a run's output)."""


class ServingError(BadInputError):
    """Serving cannot start: the folder lacks a file the server needs, or a setting is wrong."""


# --- a stage failed: exit 3 ----------------------------------------------------------------------
class StageError(HubcompressError):
    """A stage failed for a reason that is not the input (finished stages are kept; rerun to resume)."""

    exit_code = EXIT_FAILED


class ReplacementError(StageError):
    """Speedup met a module it cannot replace with a smaller one."""


class DistributedRunError(StageError):
    """A data-parallel stage (under torchrun / accelerate) failed on one process, often because
    another one died or hung."""


# --- the hub -------------------------------------------------------------------------------------
class HubError(HubcompressError):
    """Loading from or pushing to a model hub failed."""

    exit_code = EXIT_HUB


class HubUnavailableError(HubError, ConnectionError):
    """The hub could not be reached or was overloaded, after retries: try again later."""


class HubNotFoundError(HubError, FileNotFoundError):
    """The repo, revision or file does not exist on the hub (or is not visible with this token)."""

    exit_code = EXIT_BAD_INPUT


class HubAuthError(HubError, PermissionError):
    """The hub refused the token, or there is none where one is needed."""

    exit_code = EXIT_BAD_INPUT


class HubRejectedError(HubError, ValueError):
    """The hub refused what was sent (the model card's metadata, a bad request)."""

    exit_code = EXIT_BAD_INPUT


# --- the gate: exit 1 ----------------------------------------------------------------------------
class GateFailedError(HubcompressError):
    """The validation gate failed, so the run's artifacts may not be published. ``report`` holds
    entries for report.json (a gate that stops the run early, the teacher's, records what it measured)."""

    exit_code = EXIT_GATE

    def __init__(self, message: str, *, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}
