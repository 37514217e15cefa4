"""A tiny BERT with a real tokenizer and a small labelled text set: what `hubcompress run` needs,
built in a second so the pipeline can be run end to end many times."""

from __future__ import annotations

import functools
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


TINY = {"vocab_size": 5 + len(WORDS), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64}
LABELS = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


def _write_vocab(path: Path) -> Path:
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    return path


@functools.cache
def _trained_classifier() -> dict:
    """The tiny classifier's weights after 20 steps on the train split (100% on validation): every
    classification run holds its teacher to the majority-class baseline, which a random head fails.
    Cached: the same few seconds for every copy of the inputs in one test process."""
    import tempfile

    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = BertTokenizerFast(str(_write_vocab(Path(tmp) / "vocab.txt")))
    rows = _texts(96, 0)
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    labels = torch.tensor([LABELS["label2id"][r["label"]] for r in rows])
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**TINY, num_labels=2, **LABELS)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(20):
        index = torch.arange(step * 16, step * 16 + 16) % len(rows)
        loss = model(**{k: v[index] for k, v in batch.items()}, labels=labels[index]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def make_tiny_run_inputs(root: Path) -> Path:
    """Write under ``root``: ``tiny-bert/`` (a 2-layer BERT classifier trained on the data, and its
    tokenizer), ``tiny-bert-base/`` (an untrained 2-layer ``BertModel``, no head: a base model) and
    ``data/*.jsonl``."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        BertTokenizerFast,
    )

    model_dir, base_dir = root / "tiny-bert", root / "tiny-bert-base"
    model_dir.mkdir(parents=True)
    vocab = _write_vocab(root / "vocab.txt")
    BertTokenizerFast(str(vocab)).save_pretrained(model_dir)
    model = BertForSequenceClassification(BertConfig(**TINY, num_labels=2, **LABELS))
    model.load_state_dict(_trained_classifier())
    model.save_pretrained(model_dir)
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(base_dir)
    BertTokenizerFast(str(vocab)).save_pretrained(base_dir)
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
    """A private copy: ``tiny-bert/`` (model + tokenizer), ``tiny-bert-base/`` and ``data/{train,validation}.jsonl``."""
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
