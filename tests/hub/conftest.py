"""Fixtures of the hub tests: a fake Hub server the real huggingface_hub client talks to.

`fake_hub` starts a `FakeHub` on 127.0.0.1 (a free port, a thread of this process) and points
huggingface_hub and transformers at it with `use_fake_hub` (see fake_hub.py for why constants are
patched rather than HF_ENDPOINT set before import). Caches and HF_HOME live under tmp_path, the
token is a fake one, Xet is disabled, and HF_HUB_OFFLINE (which `make test` exports) is off.

`consumer_hub` is a fake hub holding `consumer_folders` (hand-built tiny BERT, remote-code and
sentence-transformers folders) as repos, for tests that load them by repo id in a subprocess
(consumers.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumer_fixtures import ConsumerFolders, ConsumerHub
from fake_hub import FAKE_TOKEN, FakeHub, use_fake_hub


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub(tmp_path / "fake-hub-storage") as hub:
        use_fake_hub(monkeypatch, hub, tmp_path / "hf-home", token=FAKE_TOKEN)
        yield hub


@pytest.fixture(scope="session")
def _tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT (save_pretrained), its tokenizer and a model card: what a run would push."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from model_cards import CardInputs, Metric, write_card

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).eval().save_pretrained(folder)
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "hub"]))
    BertTokenizer(str(vocab)).save_pretrained(folder)
    metric = Metric("accuracy", 0.9, "Tiny", "tiny", "text-classification")
    write_card(CardInputs(repo_id="tester/tiny-bert", base_model="prajjwal1/bert-tiny", teacher_metrics=[metric],
                          student_metrics=[metric], layers=[{"layer": 0, "heads": 2, "ffn": 32},
                                                            {"layer": 1, "heads": 1, "ffn": 16}]), folder)
    return folder


@pytest.fixture
def tiny_model_folder(_tiny_model_folder: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder, free to modify."""
    return Path(shutil.copytree(_tiny_model_folder, tmp_path / "tiny-bert"))


@pytest.fixture(scope="session")
def consumer_folders(tmp_path_factory: pytest.TempPathFactory) -> ConsumerFolders:
    """Built once per session (a few seconds: ONNX export and int8 quantization); do not modify them."""
    from consumer_fixtures import build_custom_code, build_sentence_transformer, build_tiny_bert  # torch: lazily

    root = tmp_path_factory.mktemp("consumer-models")
    bert = build_tiny_bert(root / "tiny-bert")
    return ConsumerFolders(bert, build_custom_code(bert, root / "tiny-bert-custom"),
                           build_sentence_transformer(bert, root / "tiny-bert-st"))


@pytest.fixture
def consumer_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 consumer_folders: ConsumerFolders) -> Iterator[ConsumerHub]:
    """The consumer folders pushed with hubcompress's push_folder to a fake hub that, like the real one,
    keeps weights, ONNX files and tokenizer.json in LFS (served from its CDN by redirect)."""
    from hubcompress.hub import push_folder

    with FakeHub(tmp_path / "fake-hub-storage", lfs_threshold=1024) as hub:
        use_fake_hub(monkeypatch, hub, tmp_path / "publisher-home", token=FAKE_TOKEN)
        repos = {name: f"{hub.user}/tiny-bert-{name}" for name in ("bert", "custom", "sentence")}
        commits = {name: push_folder(getattr(consumer_folders, name), repo_id, retries=0).commit_oid
                   for name, repo_id in repos.items()}
        workdir = tmp_path / "consumer"
        workdir.mkdir()
        yield ConsumerHub(hub, consumer_folders, repos, commits, tmp_path / "consumer-home", workdir)
