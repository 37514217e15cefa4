"""The fake hub's read side: what a consumer loading a repo by id is answered (see fake_hub.py).

Downloads behave as on the real Hub, because transformers and sentence-transformers decide what
to load from these answers:
- `resolve` of a regular file: 200, the bytes, `X-Repo-Commit` and `ETag` (git blob id);
- `resolve` of an LFS file: 302 to a CDN on another origin (so the client stops there and reads the
  file's metadata from `X-Linked-Etag` / `X-Linked-Size` on the redirect, and sends no token on);
- a missing file: 404, `X-Error-Code: EntryNotFound` and still `X-Repo-Commit`, which the client
  uses to cache "this file does not exist at that commit" (transformers probes many optional files,
  and a later offline load must not ask again);
- `Range` requests (resumed downloads, safetensors header reads): 206 / 416.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import yaml

from fake_hub_handlers import card_metadata
from fake_hub_store import Commit, Entry, Repo, StoreError

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# The part of config.json / tokenizer_config.json the real hub echoes in model info's `config`.
_CONFIG_KEYS = ("architectures", "model_type", "auto_map")
_TOKENIZER_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token",
                   "chat_template")


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class ReadsMixin:
    """Mixed into the request handler with HandlersMixin (`_repo`, `send*`, `hub` come from there)."""

    hub: Any
    command: str
    headers: Any
    _repo: Callable[..., Repo]
    send: Callable[..., None]
    send_json: Callable[..., None]

    # -- files -----------------------------------------------------------------------------
    def route_resolve(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=False)
        commit = self.hub.store.resolve(repo, params["rev"])
        entry = commit.tree.get(params["path"])
        if entry is None:
            raise StoreError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if entry.lfs_sha256:
            etag = f'"{entry.lfs_sha256}"'
            headers.update({"ETag": etag, "X-Linked-Etag": etag, "X-Linked-Size": str(entry.size),
                            "Location": f"{self.hub.cdn_endpoint}/__lfs__/{entry.lfs_sha256}"})
            self.send(302, b"", content_type="text/plain", headers=headers)
            return
        headers["ETag"] = f'"{entry.blob_sha}"'
        self.send_file(self.hub.store.read(entry), headers)

    def route_cdn(self, params: dict, query: dict, body: bytes) -> None:
        # A CDN knows nothing of repos or commits: no X-Repo-Commit, no hub error codes.
        data = self.hub.store.read_lfs(params["oid"])
        self.send_file(data, {"ETag": f'"{params["oid"]}"', "Accept-Ranges": "bytes"})

    def send_file(self, data: bytes, headers: dict[str, str]) -> None:
        """200 with `data`, or 206 with the part a `Range: bytes=a-b` / `bytes=-n` header asks for."""
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if match is None or self.command != "GET" or match.group(1) == match.group(2) == "":
            self.send(200, data, content_type="application/octet-stream", headers=headers)
            return
        size = len(data)
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        else:  # a suffix: the last n bytes
            start, end = max(0, size - int(match.group(2))), size - 1
        if start >= size or start > end:
            self.send(416, b"", content_type="text/plain", headers={"Content-Range": f"bytes */{size}"})
            return
        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        self.send(206, data[start:end + 1], content_type="application/octet-stream", headers=headers)

    # -- listings ----------------------------------------------------------------------------
    def route_tree(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=False)
        commit = self.hub.store.resolve(repo, params["rev"])
        self.send_json(200, self.hub.store.list_tree(commit, params.get("path", ""), _is_true(query.get("recursive"))))

    def route_paths_info(self, params: dict, query: dict, body: bytes) -> None:
        # get_paths_info and HfFileSystem post a form: paths=a&paths=b&expand=False
        repo = self._repo(params, write=False)
        commit = self.hub.store.resolve(repo, params["rev"])
        form = parse_qs(body.decode()) if body else {}
        self.send_json(200, self.hub.store.paths_info(commit, form.get("paths", [])))

    def route_refs(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=False)
        branches = [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                    for name, sha in sorted(repo.refs.items()) if not name.startswith("refs/")]
        payload: dict[str, Any] = {"branches": branches, "tags": [], "converts": []}
        if _is_true(query.get("include_prs")):
            payload["pullRequests"] = [{"name": name, "ref": name, "targetCommit": sha}
                                       for name, sha in sorted(repo.refs.items()) if name.startswith("refs/pr/")]
        self.send_json(200, payload)

    def route_commits(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=False)
        commits = self.hub.store.history(self.hub.store.resolve(repo, params["rev"]))
        self.send_json(200, [{"id": c.sha, "title": c.title, "message": c.description, "date": c.date,
                              "authors": [{"user": self.hub.user, "avatar": None}]} for c in commits])

    def route_info(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=False)
        commit = self.hub.store.resolve(repo, params.get("rev", "main"))
        blobs = _is_true(query.get("blobs"))
        siblings = []
        for path, entry in sorted(commit.tree.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.blob_sha)
                if entry.lfs_sha256:
                    sibling["lfs"] = {"sha256": entry.lfs_sha256, "size": entry.size, "pointerSize": 0}
            siblings.append(sibling)
        card = self._card(commit)
        self.send_json(200, {
            "_id": commit.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0], "sha": commit.sha, "lastModified": commit.date,
            "createdAt": repo.created_at, "private": repo.private, "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": list(card.get("tags") or []),
            "pipeline_tag": card.get("pipeline_tag"), "library_name": card.get("library_name") or _library(commit),
            "cardData": card or None, "config": self._config(commit), "siblings": siblings, "spaces": [],
            "usedStorage": sum(entry.size for entry in commit.tree.values()),
        })

    # -- helpers ------------------------------------------------------------------------------
    def _json_file(self, commit: Commit, path: str) -> dict[str, Any]:
        entry: Entry | None = commit.tree.get(path)
        if entry is None:
            return {}
        try:
            data = json.loads(self.hub.store.read(entry))
        except (ValueError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _config(self, commit: Commit) -> dict[str, Any] | None:
        config = {key: value for key, value in self._json_file(commit, "config.json").items() if key in _CONFIG_KEYS}
        tokenizer = {key: value for key, value in self._json_file(commit, "tokenizer_config.json").items()
                     if key in _TOKENIZER_KEYS and isinstance(value, str)}
        if tokenizer:
            config["tokenizer_config"] = tokenizer
        return config or None

    def _card(self, commit: Commit) -> dict[str, Any]:
        if "README.md" not in commit.tree:
            return {}
        try:
            return card_metadata(self.hub.store.read(commit.tree["README.md"]).decode())
        except (yaml.YAMLError, ValueError, UnicodeDecodeError):
            return {}


def _library(commit: Commit) -> str | None:
    """The library the real hub infers from the files when the card names none."""
    if "modules.json" in commit.tree or "config_sentence_transformers.json" in commit.tree:
        return "sentence-transformers"
    return "transformers" if "config.json" in commit.tree else None
