"""The hub client of hubcompress: push an output folder, find a model's files.

Both functions use huggingface_hub's public API, so HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE and
HF_HUB_OFFLINE work as they do for huggingface_hub, and raise `hubcompress.errors.HubError` with a
message that says what to do.

Example:
    >>> from hubcompress.hub import resolve_model_source
    >>> import tempfile
    >>> resolve_model_source(tempfile.gettempdir()).is_dir()
    True
"""

from __future__ import annotations

from hubcompress.hub.push import DEFAULT_COMMIT_MESSAGE, PushResult, push_folder
from hubcompress.hub.resolve import resolve_model_source

__all__ = ["DEFAULT_COMMIT_MESSAGE", "PushResult", "push_folder", "resolve_model_source"]
