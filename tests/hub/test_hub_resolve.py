"""resolve_model_source: a folder as is, a repo id through the cache, clear errors offline."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from fake_hub import FakeHub
from hubcompress.errors import HubError, HubNotFoundError, HubUnavailableError, ModelNotFoundError, ModelSourceError
from hubcompress.hub import push_folder, resolve_model_source

REPO = "tester/tiny-bert"


def test_a_folder_is_returned_as_is(tmp_path: Path) -> None:
    assert resolve_model_source(tmp_path) == tmp_path
    assert resolve_model_source(str(tmp_path)) == tmp_path


def test_a_repo_id_is_downloaded(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    commit = push_folder(tiny_model_folder, REPO).commit_oid

    folder = resolve_model_source(REPO)

    assert folder.name == commit and folder.is_relative_to(constants.HF_HUB_CACHE)
    assert (folder / "model.safetensors").read_bytes() == (tiny_model_folder / "model.safetensors").read_bytes()
    only_config = resolve_model_source(REPO, allow_patterns=["config.json"])
    assert (only_config / "config.json").is_file()


def test_offline_uses_the_cache(fake_hub: FakeHub, tiny_model_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    push_folder(tiny_model_folder, REPO)
    online = resolve_model_source(REPO)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(fake_hub.requests)

    assert resolve_model_source(REPO) == online
    assert len(fake_hub.requests) == before  # not a single request


def test_offline_without_cache_says_to_pass_a_folder(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(HubNotFoundError) as raised:  # the fix is the user's: exit 2, a FileNotFoundError
        resolve_model_source("someone/never-downloaded")

    assert raised.value.exit_code == 2 and isinstance(raised.value, FileNotFoundError)
    message = str(raised.value)
    assert "HF_HUB_OFFLINE" in message and "pass that folder instead of the repo id" in message


def test_unreachable_hub_without_cache_says_to_pass_a_folder(fake_hub: FakeHub,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)

    with pytest.raises(HubUnavailableError, match="could not be reached.*pass that folder instead") as raised:
        resolve_model_source("someone/never-downloaded")
    assert raised.value.exit_code == 4 and isinstance(raised.value, ConnectionError)


def test_missing_repo_and_revision(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    with pytest.raises(HubNotFoundError, match="not found.*HF_TOKEN"):
        resolve_model_source("someone/does-not-exist")
    push_folder(tiny_model_folder, REPO)
    with pytest.raises(HubNotFoundError, match="at revision 'v9': that revision does not exist"):
        resolve_model_source(REPO, revision="v9")


def test_neither_folder_nor_repo_id(tmp_path: Path) -> None:
    # bad input: exit 2, and not-found is a FileNotFoundError
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        resolve_model_source(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_model_source("./out/missing")
    with pytest.raises(ModelSourceError, match="neither an existing folder nor a valid hub repo id"):
        resolve_model_source("a/b/c")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelSourceError, match="it is a file"):
        resolve_model_source(tmp_path / "file.txt")


@pytest.mark.parametrize("module", ["hubcompress.hub", "hubcompress.hub.push", "hubcompress.hub.resolve",
                                    "hubcompress.hub._errors"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_offline_falls_back_to_a_registered_packaged_copy(fake_hub: FakeHub, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from hubcompress.hub import resolve as resolve_module

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setitem(resolve_module.OFFLINE_COPIES, "someone/packaged", lambda: tmp_path)

    assert resolve_model_source("someone/packaged") == tmp_path
    assert "packaged copy" in caplog.text
    with pytest.raises(HubError):  # a packaged copy is one fixed revision: a pinned one is not it
        resolve_model_source("someone/packaged", revision="v2")
