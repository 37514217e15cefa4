"""Publish an output folder to a model hub (create the repo, upload the folder, maybe as a PR).

Everything goes through huggingface_hub's public API, so `HF_ENDPOINT` (a mirror or a test
server) and `HF_TOKEN` are honoured exactly as huggingface_hub honours them. The token is handed
to huggingface_hub and otherwise only used to scrub error messages: it is never logged or written.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from huggingface_hub import HfApi, get_token

from hubcompress.errors import BadInputError, HubError, OutputFolderError
from hubcompress.hub._errors import explain_push_error, is_transient, scrub

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_COMMIT_MESSAGE = "Upload model compressed with hubcompress"
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class PushResult:
    """Where a push landed.

    Attributes:
        repo_id: the repository pushed to.
        repo_url: its web address.
        commit_url: the address of the commit created.
        commit_oid: the commit's sha.
        pr_url: the pull request opened, when `create_pr=True`.
        revision: the branch pushed to (None: the default branch).
        private: the visibility asked for when the repo had to be created.
    """

    repo_id: str
    repo_url: str
    commit_url: str
    commit_oid: str
    pr_url: str | None
    revision: str | None
    private: bool


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    retries: int,
    backoff_s: float,
    secrets: Sequence[str | None] = (),
) -> tuple[T, int]:
    """Run `call`, retrying transient failures (429, 5xx, connection errors) with backoff.

    The wait doubles after each failure (`backoff_s`, 2x, 4x... capped at 30 s) with a little
    jitter, so many clients hitting a recovering server do not retry in lock step.

    Returns:
        The call's result and the number of attempts it took.

    Raises:
        Exception: the last error, when it is not transient or `retries` are used up; its
            `.hubcompress_attempts` attribute holds the attempts made.

    Example:
        >>> call_with_retries(lambda: 42, what="answering", retries=2, backoff_s=0)
        (42, 1)
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call(), attempt
        except Exception as error:
            if attempt > retries or not is_transient(error):
                error.hubcompress_attempts = attempt  # type: ignore[attr-defined]
                raise
            delay = min(MAX_BACKOFF_S, backoff_s * 2 ** (attempt - 1)) * random.uniform(1.0, 1.25)
            logger.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.1f s",
                what, attempt, retries + 1, scrub(f"{type(error).__name__}: {error}", secrets).splitlines()[0], delay,
            )
            time.sleep(delay)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    create_pr: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    commit_description: str | None = None,
    ignore_patterns: Sequence[str] | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> PushResult:
    """Push a local folder to a model repository, creating the repository if needed.

    Args:
        folder: the folder to upload (its layout is kept).
        repo_id: ``"namespace/name"``.
        private: create the repository private (an existing one keeps its visibility).
        create_pr: open a pull request against the default branch instead of committing to it.
        revision: an existing branch to commit to (not with `create_pr`).
        token: a token; None means huggingface_hub's own lookup (HF_TOKEN, then `hf auth login`).
        commit_message, commit_description: the commit's title and body.
        ignore_patterns: glob patterns of files not to upload.
        retries: how many times a transient failure (429, 5xx, connection error) is retried.
        backoff_s: the first wait between attempts; it doubles after each failure.

    A retry redoes the whole push. That is safe for commits (files already on the branch are
    skipped), but with `create_pr=True` a commit whose answer was lost can leave a second PR.
    Files identical to the default branch are never uploaded, so a `create_pr` push that changes
    nothing opens no PR (`pr_url` is None, and a warning is logged).

    Returns:
        A `PushResult` with the commit and, with `create_pr`, the pull request url.

    Raises:
        HubError: saying what failed and what to do (for instance, set HF_TOKEN on a 401).

    Example:
        >>> push_folder("out/minilm-small", "me/minilm-small", create_pr=True)  # doctest: +SKIP
        PushResult(repo_id='me/minilm-small', ..., pr_url='https://huggingface.co/me/minilm-small/discussions/1', ...)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputFolderError(f"cannot push {str(folder)!r}: it is not a folder. Pass the output folder of a run.")
    if create_pr and revision not in (None, "main"):
        raise BadInputError(
            f"cannot push to {repo_id!r} with create_pr=True and revision={revision!r}: a pull request is "
            "always opened against the default branch. Drop revision, or drop create_pr to commit to the branch."
        )
    api = HfApi(token=token)
    secret = token or get_token()
    secrets = [secret]

    def attempt() -> tuple[str, object]:
        # create_repo(exist_ok=True) is idempotent, so a retried attempt may safely redo it.
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            commit_description=commit_description,
            ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
        )
        return str(repo_url), commit

    logger.info("pushing %s to %s on %s%s", folder, repo_id, api.endpoint, " as a pull request" if create_pr else "")
    try:
        (repo_url, commit), attempts = call_with_retries(
            attempt, what=f"pushing to {repo_id}", retries=retries, backoff_s=backoff_s, secrets=secrets
        )
    except HubError:
        raise
    except Exception as error:
        raise explain_push_error(
            error,
            repo_id=repo_id,
            endpoint=api.endpoint,
            attempts=getattr(error, "hubcompress_attempts", 1),
            revision=revision,
            had_token=bool(secret),
            secrets=secrets,
        ) from error
    result = PushResult(
        repo_id=repo_id,
        repo_url=repo_url,
        commit_url=commit.commit_url,  # type: ignore[attr-defined]
        commit_oid=commit.oid,  # type: ignore[attr-defined]
        pr_url=commit.pr_url,  # type: ignore[attr-defined]
        revision=revision,
        private=private,
    )
    if create_pr and result.pr_url is None:
        # huggingface_hub drops files identical to the default branch; with nothing left, no PR.
        logger.warning("%s: nothing differs from the default branch, so no pull request was opened", repo_id)
    logger.info("pushed %s in %d attempt(s): %s", repo_id, attempts, result.pr_url or result.commit_url)
    return result
