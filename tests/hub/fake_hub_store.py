"""Storage of the fake hub: repositories, refs, commits with sha ids, blobs on disk.

Content is addressed as git does (blob id = sha1 of ``blob <size>\\0<bytes>``), so the `oid`s
and ETags the fake hub serves are the values the real huggingface_hub client computes and checks.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.onnx filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class StoreError(Exception):
    """A request the hub refuses: carries the HTTP status, the hub's X-Error-Code and extra headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, dict(headers or {})


@dataclass(frozen=True)
class Entry:
    """One file of a commit's tree."""

    blob_sha: str
    size: int
    lfs_sha256: str | None = None


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    tree: dict[str, Entry]
    title: str
    description: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)  # "main", "refs/pr/1" -> commit sha
    discussions: dict[int, dict] = field(default_factory=dict)  # num -> title, is_pr, created_at...


class Store:
    """Thread-safe repositories in a folder (blobs on disk, metadata in memory)."""

    def __init__(self, root: Path):
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "lfs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.commits: dict[str, Commit] = {}
        self.lock = threading.RLock()
        self._counter = itertools.count()

    # -- blobs -------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> Entry:
        sha = git_blob_sha(data)
        path = self.root / "blobs" / sha
        if not path.exists():
            path.write_bytes(data)
        return Entry(sha, len(data))

    def put_lfs(self, sha256: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(400, f"uploaded bytes do not match oid {sha256}")
        (self.root / "lfs" / sha256).write_bytes(data)

    def has_lfs(self, sha256: str) -> bool:
        return (self.root / "lfs" / sha256).exists()

    def read_lfs(self, sha256: str) -> bytes:
        path = self.root / "lfs" / sha256
        if not path.exists():
            raise StoreError(404, "Not Found")  # what a CDN says: no hub error code
        return path.read_bytes()

    def read(self, entry: Entry) -> bytes:
        if entry.lfs_sha256 is not None:
            return (self.root / "lfs" / entry.lfs_sha256).read_bytes()
        return (self.root / "blobs" / entry.blob_sha).read_bytes()

    # -- repos and revisions ------------------------------------------------------------------
    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> tuple[Repo, bool]:
        with self.lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                return self.repos[key], False
            repo = Repo(repo_type, repo_id, private, now_iso())
            self.repos[key] = repo
            # The real hub seeds every repo with a .gitattributes that routes weights to LFS.
            entry = self.put_blob(GITATTRIBUTES)
            self._add_commit(repo, "main", None, {".gitattributes": entry}, "initial commit", "")
            return repo, True

    def get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise StoreError(404, "Repository not found", "RepoNotFound")
        return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        with self.lock:
            sha = repo.refs.get(revision)
            if sha is None and len(revision) == 40 and revision in self.commits:
                sha = revision
            if sha is None:
                raise StoreError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return self.commits[sha]

    def open_discussion(self, repo: Repo, title: str, description: str, *, pull_request: bool) -> int:
        """Open a discussion; a pull request also gets a `refs/pr/N` branched from main."""
        with self.lock:
            num = len(repo.discussions) + 1
            repo.discussions[num] = {"title": title, "description": description, "is_pr": pull_request,
                                     "created_at": now_iso()}
            if pull_request:
                repo.refs[f"refs/pr/{num}"] = repo.refs["main"]
            return num

    def _add_commit(self, repo: Repo, ref: str, parent: str | None, tree: dict[str, Entry],
                    title: str, description: str) -> Commit:
        seed = f"{repo.repo_id}\n{parent}\n{title}\n{sorted((p, e.blob_sha) for p, e in tree.items())}"
        sha = hashlib.sha1(f"{seed}\n{next(self._counter)}".encode()).hexdigest()
        commit = Commit(sha, parent, dict(tree), title, description, now_iso())
        self.commits[sha] = commit
        repo.refs[ref] = sha
        return commit

    def commit(self, repo: Repo, revision: str, header: dict, operations: list[dict],
               create_pr: bool) -> tuple[Commit, int | None]:
        """Apply ndjson commit operations on `revision` (or on a new PR branched from it)."""
        with self.lock:
            base = self.resolve(repo, revision)
            parent_commit = header.get("parentCommit")
            if parent_commit and not base.sha.startswith(parent_commit) and not create_pr:
                raise StoreError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(base.tree)
            for op in operations:
                key, value = op.get("key"), op.get("value") or {}
                path = str(value.get("path", "")).strip("/")
                if key == "file":
                    tree[path] = self.put_blob(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    oid, size = value["oid"], int(value["size"])
                    if not self.has_lfs(oid):
                        raise StoreError(422, f"LFS object {oid} for {path} was never uploaded")
                    pointer = self.put_blob(lfs_pointer(oid, size))
                    tree[path] = Entry(pointer.blob_sha, size, oid)
                elif key == "deletedFile":
                    if path not in tree:
                        raise StoreError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del tree[path]
                elif key == "deletedFolder":
                    tree = {p: e for p, e in tree.items() if not p.startswith(path + "/")}
                else:
                    raise StoreError(400, f"unknown commit operation {key!r}")
            pr_num = None
            ref = revision if revision in repo.refs else None
            if create_pr:
                pr_num = self.open_discussion(repo, header.get("summary") or "", "", pull_request=True)
                ref = f"refs/pr/{pr_num}"
            if ref is None:
                raise StoreError(400, f"cannot commit on {revision}: not a branch")
            commit = self._add_commit(repo, ref, base.sha, tree, header.get("summary") or "",
                                      header.get("description") or "")
            return commit, pr_num

    # -- listings ------------------------------------------------------------------------------
    @staticmethod
    def directories(tree: dict[str, Entry]) -> set[str]:
        dirs = set()
        for path in tree:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return dirs

    def history(self, commit: Commit) -> list[Commit]:
        """`commit` and its ancestors, newest first."""
        out = [commit]
        while out[-1].parent is not None:
            out.append(self.commits[out[-1].parent])
        return out

    @staticmethod
    def tree_item(path: str, entry: Entry) -> dict:
        """A file as the tree and paths-info endpoints list it (oid: the git blob id, of the pointer for LFS)."""
        item: dict = {"type": "file", "oid": entry.blob_sha, "size": entry.size, "path": path}
        if entry.lfs_sha256:
            pointer_size = len(lfs_pointer(entry.lfs_sha256, entry.size))
            item["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": pointer_size}
        return item

    @staticmethod
    def directory_item(commit: Commit, path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(f"{commit.sha}:{path}".encode()).hexdigest(),
                "size": 0, "path": path}

    def list_tree(self, commit: Commit, path: str, recursive: bool) -> list[dict]:
        path = path.strip("/")
        dirs = self.directories(commit.tree)
        if path and path not in dirs:
            raise StoreError(404, f"{path} does not exist on this revision", "EntryNotFound")
        prefix = f"{path}/" if path else ""

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

        out = [self.directory_item(commit, d) for d in sorted(dirs) if wanted(d)]
        out += [self.tree_item(p, commit.tree[p]) for p in sorted(commit.tree) if wanted(p)]
        return out

    def paths_info(self, commit: Commit, paths: list[str]) -> list[dict]:
        """The entries of those `paths` that exist (files or folders); missing ones are left out, as the hub does."""
        dirs = self.directories(commit.tree)
        out = []
        for path in (p.strip("/") for p in paths):
            if path in commit.tree:
                out.append(self.tree_item(path, commit.tree[path]))
            elif path in dirs:
                out.append(self.directory_item(commit, path))
        return out
