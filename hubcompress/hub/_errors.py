"""Turn huggingface_hub / HTTP failures into `HubError`s that say what to do.

Every message passes through `scrub`, so a token never reaches a log line or an exception, even
if some layer below echoed it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from huggingface_hub.errors import (
    BadRequestError,
    GatedRepoError,
    HfHubHTTPError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hubcompress.errors import (
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubRejectedError,
    HubUnavailableError,
)

# Statuses worth another try: overload, rate limit, and the 5xx a proxy or a deploy produces.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def _transport_error_types() -> tuple[type[BaseException], ...]:
    # huggingface_hub 2.x speaks httpx2, 1.x httpx; catch whichever is installed without importing
    # a client library of our own.
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            types.append(importlib.import_module(module_name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(types)


TRANSPORT_ERRORS = _transport_error_types()


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret in `text` by `***`.

    Example:
        >>> scrub("token hf_abc rejected", ["hf_abc"])
        'token *** rejected'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def http_status(error: BaseException) -> int | None:
    """The HTTP status of a huggingface_hub error, if it carries a response."""
    if isinstance(error, HfHubHTTPError) and getattr(error, "response", None) is not None:
        return error.response.status_code
    return None


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same call may succeed: 429/5xx answers and connection failures.

    Example:
        >>> is_transient(ConnectionResetError()), is_transient(ValueError())
        (True, False)
    """
    if isinstance(error, OfflineModeIsEnabled):
        return False
    status = http_status(error)
    if status is not None:
        return status in TRANSIENT_STATUSES
    return isinstance(error, TRANSPORT_ERRORS)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def explain_push_error(
    error: BaseException,
    *,
    repo_id: str,
    endpoint: str,
    attempts: int,
    revision: str | None,
    had_token: bool,
    secrets: Iterable[str | None],
) -> HubError:
    """A `HubError` for a failed push, with the fix in its message."""
    status = http_status(error)
    where = f"pushing to {repo_id!r} on {endpoint}"
    kind: type[HubError] = HubError
    if isinstance(error, OfflineModeIsEnabled):
        kind = HubUnavailableError
        message = f"{where} is impossible while HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to push."
    elif isinstance(error, LocalTokenNotFoundError) or (status == 401 and not had_token):
        kind = HubAuthError
        message = (
            f"{where} needs a token and none was found: set HF_TOKEN to a token with write access "
            f"(create one at {endpoint}/settings/tokens), run `hf auth login`, or pass token=..."
        )
    elif status == 401:
        kind = HubAuthError
        message = (
            f"{where} failed: the hub refused the token (HTTP 401). Set HF_TOKEN to a valid token "
            f"with write access (create one at {endpoint}/settings/tokens) or pass token=..."
        )
    elif status == 403:
        kind = HubAuthError
        message = (
            f"{where} failed: the token may not write to this namespace (HTTP 403). Use a token with "
            f"write access to {repo_id.split('/')[0]!r} in HF_TOKEN, or push to a namespace you own."
        )
    elif isinstance(error, RevisionNotFoundError):
        kind = HubNotFoundError
        message = (
            f"{where} failed: branch {revision!r} does not exist. Create it first with "
            f"`HfApi().create_branch({repo_id!r}, branch={revision!r})`, or push without revision."
        )
    elif isinstance(error, RepositoryNotFoundError):
        kind = HubNotFoundError
        message = (
            f"{where} failed: the repository was not found and could not be created. Check the repo "
            "id (namespace/name) and that HF_TOKEN holds a token allowed to create it."
        )
    elif isinstance(error, (BadRequestError, ValueError)) and "README.md" in str(error):
        kind = HubRejectedError
        message = (
            f"{where} failed: the hub rejected the model card metadata in README.md: "
            f"{_one_line(error)}. Fix the card; "
            "`model_cards.validate_card` shows the problems offline."
        )
    elif status in TRANSIENT_STATUSES:
        kind = HubUnavailableError
        message = (
            f"{where} failed with HTTP {status} after {attempts} attempt(s): the hub is overloaded or "
            "down. Try again later; rerunning the push is safe (unchanged files are skipped)."
        )
    elif is_transient(error):
        kind = HubUnavailableError
        message = (
            f"{where} failed: the hub could not be reached after {attempts} attempt(s) "
            f"({type(error).__name__}: {_first_line(error)}). Check the network, and HF_ENDPOINT if "
            "you use a mirror."
        )
    else:
        message = f"{where} failed: {type(error).__name__}: {_first_line(error)}"
    return kind(scrub(message, secrets))


def explain_download_error(
    error: BaseException,
    *,
    repo_id: str,
    revision: str | None,
    endpoint: str,
    offline: bool,
    secrets: Iterable[str | None],
) -> HubError:
    """A `HubError` for a model that could not be fetched, with the fix in its message."""
    status = http_status(error)
    ref = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    local_hint = (
        "Download it where the hub is reachable (`hf download "
        f"{repo_id} --local-dir DIR`), copy DIR here and pass that folder instead of the repo id"
    )
    kind: type[HubError] = HubUnavailableError
    if isinstance(error, GatedRepoError):
        kind = HubAuthError
        message = (
            f"cannot load {ref}: the repository is gated. Accept its terms at {endpoint}/{repo_id} and "
            "set HF_TOKEN to a token of that account."
        )
    elif isinstance(error, RevisionNotFoundError):
        kind = HubNotFoundError
        message = f"cannot load {ref}: that revision does not exist on {endpoint}. Check the branch, tag or commit."
    elif isinstance(error, RepositoryNotFoundError) or status in (401, 403):
        kind = HubNotFoundError
        message = (
            f"cannot load {ref}: not found on {endpoint}. Check the repo id; if it is private, "
            "set HF_TOKEN to a token that can read it. A local folder path also works."
        )
    elif offline:
        kind = HubNotFoundError  # not in the local cache: the fix is the user's (download it, or go online)
        message = (
            f"cannot load {ref}: HF_HUB_OFFLINE is set and it is not in the local cache. {local_hint}, "
            "or unset HF_HUB_OFFLINE to download it."
        )
    else:
        message = (
            f"cannot load {ref}: the hub at {endpoint} could not be reached and it is not in the local "
            f"cache ({type(error).__name__}: {_first_line(error)}). {local_hint}, or check the network "
            "and HF_ENDPOINT."
        )
    return kind(scrub(message, secrets))
