"""push_folder against the fake hub, read back with the real huggingface_hub and transformers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download, list_repo_files, model_info, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError

from fake_hub import FakeHub, use_fake_hub
from hubcompress.errors import BadInputError, HubError, OutputFolderError
from hubcompress.hub import push_folder

REPO = "tester/tiny-bert"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_round_trip_is_byte_identical_and_loads(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    from transformers import AutoModel, AutoTokenizer, BertModel

    result = push_folder(tiny_model_folder, REPO)

    assert result.repo_url == f"{fake_hub.endpoint}/{REPO}"
    assert result.commit_url.endswith(result.commit_oid) and result.pr_url is None
    local = _files(tiny_model_folder)
    assert {"README.md", "assets/layer_widths.png", "config.json", "model.safetensors"} <= set(local)
    assert set(local) <= set(list_repo_files(REPO))
    for name, data in local.items():
        assert Path(hf_hub_download(REPO, name)).read_bytes() == data, name
    snapshot = Path(snapshot_download(REPO))
    assert {name: data for name, data in _files(snapshot).items() if name in local} == local
    assert model_info(REPO).sha == result.commit_oid

    model = AutoModel.from_pretrained(REPO)
    reference = BertModel.from_pretrained(tiny_model_folder)
    pairs = zip(model.state_dict().values(), reference.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert AutoTokenizer.from_pretrained(REPO)("hello world")["input_ids"] == [2, 5, 6, 3]


def test_pushed_card_names_base_model_and_passes_hub_validation(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    push_folder(tiny_model_folder, REPO)

    card = ModelCard.load(REPO)
    assert card.data.base_model == "prajjwal1/bert-tiny"
    card.validate()  # POSTs to the (fake) hub's /api/validate-yaml
    assert fake_hub.calls("validate_yaml")
    broken = ModelCard("---\nbase_model: org/base\nbase_model_relation: pruned\n---\n# x\n")
    with pytest.raises(ValueError, match="base_model_relation"):
        broken.validate()


def test_private_flag_is_sent(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    push_folder(tiny_model_folder, REPO, private=True)

    (create,) = fake_hub.calls("create")
    assert create["json"]["visibility"] == "private" and create["json"]["name"] == "tiny-bert"
    assert model_info(REPO).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(REPO)  # anonymous readers do not see a private repo


def test_create_pr_yields_a_pull_request(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    first = push_folder(tiny_model_folder, REPO)
    (tiny_model_folder / "README.md").write_text((tiny_model_folder / "README.md").read_text() + "\nMore.\n")

    result = push_folder(tiny_model_folder, REPO, create_pr=True, commit_message="Update the card")

    assert result.pr_url == f"{fake_hub.endpoint}/{REPO}/discussions/1"
    assert model_info(REPO).sha == first.commit_oid  # main is untouched
    on_pr = Path(hf_hub_download(REPO, "README.md", revision="refs/pr/1")).read_text()
    assert on_pr.endswith("More.\n")


def test_create_pr_with_nothing_changed_opens_none(fake_hub: FakeHub, tiny_model_folder: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    push_folder(tiny_model_folder, REPO)
    with caplog.at_level(logging.WARNING, logger="hubcompress.hub"):
        assert push_folder(tiny_model_folder, REPO, create_pr=True).pr_url is None
    assert "no pull request" in caplog.text


def test_transient_500s_are_retried(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    fake_hub.fail_next("commit", status=500, times=2)

    result = push_folder(tiny_model_folder, REPO, retries=3, backoff_s=0.01)

    assert len(fake_hub.calls("commit")) == 3
    assert model_info(REPO).sha == result.commit_oid


def test_retries_are_bounded(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    fake_hub.fail_next("commit", status=503, times=10)

    with pytest.raises(HubError, match=r"HTTP 503 after 3 attempt"):
        push_folder(tiny_model_folder, REPO, retries=2, backoff_s=0.01)
    assert len(fake_hub.calls("commit")) == 3


def test_401_says_set_hf_token_and_hides_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tiny_model_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "hf_wrong_SECRET_0123456789"
    with FakeHub(tmp_path / "storage", tokens={"hf_the_right_one"}) as hub:
        use_fake_hub(monkeypatch, hub, tmp_path / "home", token=secret)
        with caplog.at_level(logging.DEBUG), pytest.raises(HubError) as raised:
            push_folder(tiny_model_folder, REPO, backoff_s=0.01)

    message = str(raised.value)
    assert "HF_TOKEN" in message and "401" in message
    assert secret not in message and secret not in caplog.text
    assert len(hub.calls("create")) == 1  # a 401 is not retried


def test_missing_token_says_set_hf_token(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch,
                                         tiny_model_folder: Path) -> None:
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="none was found: set HF_TOKEN"):
        push_folder(tiny_model_folder, REPO)


def test_missing_branch_says_how_to_create_it(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    with pytest.raises(HubError, match="create_branch"):
        push_folder(tiny_model_folder, REPO, revision="v2")


def test_bad_arguments_fail_before_any_request(tmp_path: Path) -> None:
    # bad input (exit 2), not a hub failure (exit 4)
    with pytest.raises(OutputFolderError, match="not a folder"):
        push_folder(tmp_path / "missing", REPO)
    with pytest.raises(BadInputError, match="create_pr=True and revision"):
        push_folder(tmp_path, REPO, create_pr=True, revision="dev")


def test_card_rejected_by_the_hub_is_explained(fake_hub: FakeHub, tiny_model_folder: Path) -> None:
    (tiny_model_folder / "README.md").write_text("---\nbase_model: org/base\nbase_model_relation: pruned\n---\n")

    with pytest.raises(HubError, match="rejected the model card metadata in README.md.*base_model_relation"):
        push_folder(tiny_model_folder, REPO)
    assert not fake_hub.calls("commit")
