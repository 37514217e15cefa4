"""The fake hub itself answers as the real Hub does, for the client paths the other tests skip."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

from fake_hub import FakeHub, use_fake_hub

REPO = "tester/tiny-bert"


def test_lfs_uploads_and_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_folder: Path) -> None:
    with FakeHub(tmp_path / "storage", lfs_threshold=1024) as hub:
        use_fake_hub(monkeypatch, hub, tmp_path / "home")
        api = HfApi()
        api.create_repo(REPO)
        api.upload_folder(repo_id=REPO, folder_path=tiny_model_folder)

        weights = (tiny_model_folder / "model.safetensors").read_bytes()
        assert hub.calls("lfs_batch") and hub.calls("lfs_put")
        (entry,) = [e for e in api.list_repo_tree(REPO) if e.path == "model.safetensors"]
        assert entry.lfs is not None and entry.lfs.size == len(weights)
        assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == weights


def test_listings_and_missing_entries(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    api = HfApi()
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=tiny_model_folder)

    top = {entry.path for entry in api.list_repo_tree(REPO)}
    assert "assets" in top and "assets/layer_widths.png" not in top
    assert [e.path for e in api.list_repo_tree(REPO, path_in_repo="assets")] == ["assets/layer_widths.png"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "nope.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")


def test_xet_client_path_with_regular_files(fake_hub: FakeHub, tiny_model_folder: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # With hf_xet enabled, upload_folder takes the pipelined path, which opens PRs through the
    # discussions API; answering "regular" everywhere keeps the Xet protocol out of it.
    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api = HfApi()
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=tiny_model_folder)
    (tiny_model_folder / "config.json").write_text("{}")

    info = api.upload_folder(repo_id=REPO, folder_path=tiny_model_folder, create_pr=True)

    assert info.pr_url == f"{fake_hub.endpoint}/{REPO}/discussions/1"
    assert fake_hub.calls("discussion_create")
    assert Path(hf_hub_download(REPO, "config.json", revision="refs/pr/1")).read_text() == "{}"
