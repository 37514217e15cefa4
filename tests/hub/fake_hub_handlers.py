"""The fake hub's write side: repo creation, card validation, uploads, commits, PRs (see fake_hub.py).

The read side (downloads, listings, model info) is in fake_hub_reads.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from fake_hub_store import Repo, StoreError

_FRONT_MATTER = re.compile(r"\A\s*---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)
_RELATIONS = {"adapter", "merge", "quantized", "finetune"}


def card_metadata(content: str) -> dict[str, Any]:
    match = _FRONT_MATTER.match(content)
    data = yaml.safe_load(match.group(1)) if match else {}
    if data is not None and not isinstance(data, dict):
        raise ValueError("the metadata block must be a mapping")
    return data or {}


def card_errors(content: str) -> list[str]:
    """What the Hub's validate-yaml rejects (the subset these tests rely on)."""
    try:
        data = card_metadata(content)
    except (yaml.YAMLError, ValueError) as error:
        return [f"invalid YAML: {error}"]
    errors = []
    for i, model in enumerate(data.get("model-index") or []):
        if not isinstance(model, dict) or not model.get("name"):
            errors.append(f'"model-index[{i}].name" is required')
            continue
        for j, result in enumerate(model.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not (result.get("task") or {}).get("type"):
                errors.append(f'"{where}.task.type" is required')
            dataset = result.get("dataset") or {}
            for key in ("type", "name"):
                if not dataset.get(key):
                    errors.append(f'"{where}.dataset.{key}" is required')
            for k, metric in enumerate(result.get("metrics") or []):
                if metric.get("type") is None or metric.get("value") is None:
                    errors.append(f'"{where}.metrics[{k}]" needs type and value')
    relation = data.get("base_model_relation")
    if relation is not None and relation not in _RELATIONS:
        errors.append(f'"base_model_relation" must be one of {sorted(_RELATIONS)}')
    if relation is not None and not data.get("base_model"):
        errors.append('"base_model_relation" needs "base_model"')
    return errors


class HandlersMixin:
    """Mixed into the request handler; `self.hub`, `self.send*` come from it."""

    hub: Any

    # -- auth ------------------------------------------------------------------------------
    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")  # type: ignore[attr-defined]
        return value[len("Bearer "):] if value.startswith("Bearer ") else None

    def _authorize(self, *, write: bool, repo: Repo | None = None) -> None:
        token = self._token()
        if token is not None and not self.hub.token_ok(token):
            # The exact message the real hub sends: huggingface_hub then reports a plain 401.
            raise StoreError(401, "Invalid credentials in Authorization header")
        if token is None and (write or (repo is not None and repo.private)):
            if write:
                raise StoreError(401, "You must be authenticated to perform this action")
            raise StoreError(401, "Repository not found", "RepoNotFound")

    def _repo(self, params: dict[str, str], *, write: bool) -> Repo:
        repo_type = params.get("type") or params.get("prefix") or "model"
        repo = self.hub.store.get_repo(repo_type, params["repo"])
        self._authorize(write=write, repo=repo)
        return repo

    # -- routes ----------------------------------------------------------------------------
    def route_create(self, params: dict, query: dict, body: bytes) -> None:
        self._authorize(write=True)
        data = json.loads(body or b"{}")
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or self.hub.user}/{data['name']}"
        private = bool(data.get("private", data.get("visibility") == "private"))
        _, created = self.hub.store.create_repo(repo_type, repo_id, private)
        url = self.hub.repo_url(repo_type, repo_id)
        if not created:
            self.send_json(409, {"error": f"You already created this {repo_type} repo", "url": url})
            return
        self.send_json(200, {"url": url, "name": repo_id})

    def route_validate_yaml(self, params: dict, query: dict, body: bytes) -> None:
        errors = card_errors(json.loads(body).get("content", ""))
        payload = {"errors": [{"message": e} for e in errors], "warnings": []}
        self.send_json(400 if errors else 200, payload)

    def route_whoami(self, params: dict, query: dict, body: bytes) -> None:
        if self._token() is None or not self.hub.token_ok(self._token()):
            raise StoreError(401, "Invalid credentials in Authorization header")
        self.send_json(200, {"type": "user", "name": self.hub.user, "orgs": []})

    def route_preupload(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=True)
        commit = self.hub.store.resolve(repo, params["rev"])
        threshold = self.hub.lfs_threshold
        files = []
        for item in json.loads(body)["files"]:
            lfs = threshold is not None and item["size"] >= threshold
            existing = commit.tree.get(item["path"])
            oid = None if existing is None else (existing.lfs_sha256 or existing.blob_sha)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self.send_json(200, {"files": files, "commitOid": commit.sha})

    def route_commit(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=True)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line.get("key") == "header"), {})
        operations = [line for line in lines if line.get("key") != "header"]
        commit, pr_num = self.hub.store.commit(repo, params["rev"], header, operations,
                                               create_pr=query.get("create_pr") == "1")
        url = self.hub.repo_url(repo.repo_type, repo.repo_id)
        self.send_json(200, {
            "success": True,
            "commitOid": commit.sha,
            "commitUrl": f"{url}/commit/{commit.sha}",
            "hookOutput": "",
            "pullRequestUrl": f"{url}/discussions/{pr_num}" if pr_num else None,
        })

    def route_discussion_create(self, params: dict, query: dict, body: bytes) -> None:
        # huggingface_hub's Xet upload pipeline opens a PR this way, then commits to refs/pr/N.
        repo = self._repo(params, write=True)
        data = json.loads(body or b"{}")
        num = self.hub.store.open_discussion(repo, data.get("title", ""), data.get("description", ""),
                                             pull_request=bool(data.get("pullRequest")))
        self.send_json(200, {"num": num, "url": f"{self.hub.repo_url(repo.repo_type, repo.repo_id)}/discussions/{num}"})

    def route_discussion(self, params: dict, query: dict, body: bytes) -> None:
        repo = self._repo(params, write=False)
        discussion = repo.discussions.get(int(params["num"]))
        if discussion is None:
            raise StoreError(404, "Discussion not found")
        self.send_json(200, {
            "num": int(params["num"]), "title": discussion["title"], "status": "open",
            "createdAt": discussion["created_at"], "author": {"name": self.hub.user},
            "repo": {"name": repo.repo_id, "type": repo.repo_type}, "isPullRequest": discussion["is_pr"],
            "events": [], "changes": {"base": "refs/heads/main"}, "filesWithConflicts": [], "diff": "",
        })

    def route_lfs_batch(self, params: dict, query: dict, body: bytes) -> None:
        self._repo(params, write=True)
        objects = []
        for obj in json.loads(body).get("objects", []):
            item = {"oid": obj["oid"], "size": obj["size"]}
            if not self.hub.store.has_lfs(obj["oid"]):  # no actions: already stored, skip the upload
                item.update(authenticated=True,
                            actions={"upload": {"href": f"{self.hub.endpoint}/__lfs__/{obj['oid']}"}})
            objects.append(item)
        self.send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                  content_type="application/vnd.git-lfs+json")

    def route_lfs_put(self, params: dict, query: dict, body: bytes) -> None:
        self.hub.store.put_lfs(params["oid"], body)
        self.send(200)
