"""A tiny BERT with a real tokenizer and a small labelled text set: what `hubcompress run` needs,
built in a second so the pipeline can be run end to end many times."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actor", "music", "the", "was", "and"]
POSITIVE, NEGATIVE = WORDS[:3], WORDS[3:6]


def _texts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(WORDS[6:]) for _ in range(rng.randint(3, 10))]
        words += [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(2)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": ["negative", "positive"][label]})
    return rows


def make_tiny_run_inputs(root: Path) -> Path:
    """Write ``tiny-bert/`` (a 2-layer BERT classifier and its tokenizer) and ``data/*.jsonl`` under ``root``."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
    )

    model_dir = root / "tiny-bert"
    model_dir.mkdir(parents=True)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    BertTokenizerFast(str(vocab)).save_pretrained(model_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).save_pretrained(model_dir)
    data = root / "data"
    data.mkdir()
    for split, n, seed in (("train", 96, 0), ("validation", 40, 1)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _texts(n, seed)))
    return root


@pytest.fixture(scope="session")
def _tiny_run_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run_inputs(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture
def tiny_run(_tiny_run_inputs: Path, tmp_path: Path) -> Path:
    """A private copy: ``tiny-bert/`` (model + tokenizer) and ``data/{train,validation}.jsonl``."""
    return Path(shutil.copytree(_tiny_run_inputs, tmp_path / "inputs"))


def write_recipe(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


CLASSIFY = """\
task: text-classification
data:
  files: {train: data/train.jsonl, validation: data/validation.jsonl}
  max_length: 16
pruning: {pruner: TaylorPruner, heads: 0.5, ffn: 0.5, schedule: {kind: agp, interval_steps: 2, total_times: 2}}
distillation: {distiller: DynamicLayerwiseDistiller}
training: {steps: 8, lr: 1.0e-3, batch_size: 16, device: cpu}
export: {int8: dynamic}
card: {base_model: tester/tiny-bert, license: apache-2.0}
"""

EMBED = """\
task: feature-extraction
data:
  files: {train: data/train.jsonl, validation: data/validation.jsonl}
  max_length: 16
pruning: {pruner: L1NormPruner, heads: 0.5, ffn: 0.5}
distillation: {distiller: DynamicLayerwiseDistiller}
training: {steps: 4, batch_size: 16, device: cpu}
export: {int8: dynamic}
card: {base_model: tester/tiny-bert}
"""
