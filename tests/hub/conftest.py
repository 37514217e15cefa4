"""Fixtures of the hub tests: a fake Hub server the real huggingface_hub client talks to.

`fake_hub` starts a `FakeHub` on 127.0.0.1 (a free port, a thread of this process) and points
huggingface_hub and transformers at it with `use_fake_hub` (see fake_hub.py for why constants are
patched rather than HF_ENDPOINT set before import). Caches and HF_HOME live under tmp_path, the
token is a fake one, Xet is disabled, and HF_HUB_OFFLINE (which `make test` exports) is off.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_hub import FakeHub, use_fake_hub

FAKE_TOKEN = "hf_fake_test_token"


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
