"""The fake hub's read side answers as the real Hub does: LFS redirects to a CDN, 404s that carry the
commit, ranges, paths-info, refs, commits, model info's config, and `unanswered()` for what it lacks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, model_info
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

from fake_hub import FakeHub, use_fake_hub
from fake_hub_reads import ReadsMixin

REPO = "tester/reads"
WEIGHTS = bytes(range(256)) * 8  # 2 KiB: over the LFS threshold below


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"],
                                                    "hidden_size": 32}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"cls_token": "[CLS]", "model_max_length": 64}))
    (folder / "weights.bin").write_bytes(WEIGHTS)
    (folder / "sub" / "notes.txt").write_text("hello")
    with FakeHub(tmp_path / "storage", lfs_threshold=1024) as fake:
        use_fake_hub(monkeypatch, fake, tmp_path / "home")
        HfApi().create_repo(REPO)
        HfApi().upload_folder(repo_id=REPO, folder_path=folder, commit_message="Add files")
        yield fake


def test_lfs_files_redirect_to_the_cdn_with_their_metadata(hub: FakeHub) -> None:
    sha = model_info(REPO).sha
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()

    head = httpx.head(f"{hub.endpoint}/{REPO}/resolve/main/weights.bin")

    assert head.status_code == 302 and head.headers["Location"] == f"{hub.cdn_endpoint}/__lfs__/{sha256}"
    assert head.headers["X-Linked-Size"] == str(len(WEIGHTS)) and head.headers["X-Linked-Etag"] == f'"{sha256}"'
    assert head.headers["X-Repo-Commit"] == sha
    metadata = get_hf_file_metadata(hf_hub_url(REPO, "weights.bin"))
    assert (metadata.size, metadata.etag, metadata.commit_hash) == (len(WEIGHTS), sha256, sha)
    assert metadata.location.startswith(hub.cdn_endpoint)  # another origin: the client stops at the redirect
    assert Path(hf_hub_download(REPO, "weights.bin")).read_bytes() == WEIGHTS
    (download,) = hub.calls("cdn")
    assert not download["authorized"]  # the token stays on the hub, as with the real CDN
    # The CDN serves LFS bytes only; the hub API is not there.
    assert httpx.get(f"{hub.cdn_endpoint}/api/models/{REPO}").status_code == 404


def test_a_missing_file_answers_entry_not_found_with_the_commit(hub: FakeHub, tmp_path: Path) -> None:
    sha = model_info(REPO).sha

    head = httpx.head(f"{hub.endpoint}/{REPO}/resolve/main/adapter_config.json")

    assert head.status_code == 404 and head.headers["X-Error-Code"] == "EntryNotFound"
    assert head.headers["X-Repo-Commit"] == sha
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "adapter_config.json")
    # ...which lets the client remember the absence, so an offline load does not look for it again.
    assert (tmp_path / "home" / "hub" / "models--tester--reads" / ".no_exist" / sha / "adapter_config.json").exists()


@pytest.mark.parametrize("path", ["resolve/main/config.json", "cdn"])
def test_range_requests(hub: FakeHub, path: str) -> None:
    if path == "cdn":
        url, data = f"{hub.cdn_endpoint}/__lfs__/{hashlib.sha256(WEIGHTS).hexdigest()}", WEIGHTS
    else:
        url = f"{hub.endpoint}/{REPO}/{path}"
        data = httpx.get(url).content
    size = len(data)

    first = httpx.get(url, headers={"Range": "bytes=0-9"})
    last = httpx.get(url, headers={"Range": "bytes=-5"})
    rest = httpx.get(url, headers={"Range": "bytes=10-"})

    assert (first.status_code, first.content, first.headers["Content-Range"]) == (206, data[:10], f"bytes 0-9/{size}")
    assert (last.status_code, last.content) == (206, data[-5:])
    assert (rest.status_code, rest.content) == (206, data[10:])
    assert httpx.get(url, headers={"Range": f"bytes={size}-"}).status_code == 416


def test_paths_info_refs_and_commits(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    infos = {entry.path: entry for entry in api.get_paths_info(REPO, ["config.json", "sub", "weights.bin", "nope"])}
    assert set(infos) == {"config.json", "sub", "weights.bin"}
    assert infos["weights.bin"].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert type(infos["sub"]).__name__ == "RepoFolder"

    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "extra.txt").write_text("x")
    api.upload_folder(repo_id=REPO, folder_path=tmp_path / "more", create_pr=True, commit_message="Proposal")

    refs = api.list_repo_refs(REPO, include_pull_requests=True)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", model_info(REPO).sha)]
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    assert [c.title for c in api.list_repo_commits(REPO)] == ["Add files", "initial commit"]
    assert [c.title for c in api.list_repo_commits(REPO, revision="refs/pr/1")][0] == "Proposal"


def test_model_info_echoes_config_and_the_library(hub: FakeHub, tmp_path: Path) -> None:
    info = model_info(REPO)

    assert info.config == {"model_type": "bert", "architectures": ["BertModel"],
                           "tokenizer_config": {"cls_token": "[CLS]"}}
    assert info.library_name == "transformers"
    HfApi().upload_file(path_or_fileobj=b"[]", path_in_repo="modules.json", repo_id=REPO)
    assert model_info(REPO).library_name == "sentence-transformers"


def test_unanswered_lists_missing_endpoints_and_server_errors(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub.unanswered() == []
    with pytest.raises(EntryNotFoundError):  # a 4xx is an answer
        hf_hub_download(REPO, "missing.json")
    assert hub.unanswered() == []

    assert httpx.get(f"{hub.endpoint}/api/models/{REPO}/no-such-endpoint/main").status_code == 404
    hub.fail_next("info", status=503)
    with pytest.raises(HfHubHTTPError):
        HfApi().model_info(REPO)

    def broken(*args: object) -> None:
        raise KeyError("a bug of the fake")

    monkeypatch.setattr(ReadsMixin, "route_refs", broken)
    with pytest.raises(HfHubHTTPError, match="fake hub bug"):  # a 500 that says why, not a dropped connection
        HfApi().list_repo_refs(REPO)

    assert [(r["route"], r["status"]) for r in hub.unanswered()] == [(None, 404), ("info", 503), ("refs", 500)]
