"""Tiny token-classification and question-answering inputs for ``hubcompress run``: a 2-layer BERT
with a WordPiece tokenizer (some words split into sub-tokens), trained for a few seconds on
synthetic data so the teacher is clearly better than chance, and that data as jsonl files.

NER rows: filler words with person names (B-PER) and cities (B-LOC, "new york" B-LOC I-LOC).
QA rows: "who ..." / "where ..." questions whose answer is the context's person or city; contexts
are long enough at ``max_length: 32`` to be cut into several windows.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
from pathlib import Path

FILLER = ["the", "a", "went", "to", "with", "and", "saw", "met", "in", "today", "later", "home", "was", "very", "happy"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
CITIES = [["paris"], ["rome"], ["oslo"], ["new", "york"], ["lima"]]
QUESTION_WORDS = ["who", "where", "is", "did", "go", "?"]
# "paris" and "erin" are not in the vocabulary whole: WordPiece splits them (par ##is, er ##in).
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, "alice", "bob", "carol", "dave", "new", "york", "rome",
         "oslo", "lima", "par", "##is", "er", "##in", *QUESTION_WORDS]
NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TINY = {"vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64}


def ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(4, 9)):
            kind = rng.random()
            if kind < 0.2:
                words.append(rng.choice(PEOPLE))
                tags.append("B-PER")
            elif kind < 0.35:
                city = rng.choice(CITIES)
                words += city
                tags += ["B-LOC"] + ["I-LOC"] * (len(city) - 1)
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        rows.append({"words": words, "tags": tags})
    return rows


def qa_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        person, city = rng.choice(PEOPLE), " ".join(rng.choice(CITIES))
        before = [rng.choice(FILLER) for _ in range(rng.randint(2, 14))]
        middle = [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
        after = [rng.choice(FILLER) for _ in range(rng.randint(2, 14))]
        pieces = [*before, person, *middle, city, *after] if i % 2 else [*before, city, *middle, person, *after]
        context = " ".join(pieces)
        # Mostly "who": a model trained for seconds learns that; "where" keeps the question in play.
        asks_person = rng.random() < 0.8
        answer = person if asks_person else city
        start = context.index(f" {answer} ") + 1 if f" {answer} " in context else context.index(answer)
        question = "who is it ?" if asks_person else "where did it go ?"
        rows.append({"id": str(i), "question": question, "context": context,
                     "answers": {"text": [answer], "answer_start": [start]}})
    return rows


@contextlib.contextmanager
def one_thread():
    """Train on one thread: tiny matmuls on a shared 2-core machine run several times faster so."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_vocab(path: Path) -> Path:
    path.write_text("\n".join(VOCAB))
    return path


def _tokenizer():
    import tempfile

    from transformers import BertTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        return BertTokenizerFast(str(write_vocab(Path(tmp) / "vocab.txt")))


@functools.cache
def trained_tagger() -> dict:
    """The tiny tagger's weights after 30 steps on the train rows."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    from hubcompress.pipeline.tasks.token_classification import TaggedEncoded, TaggedSplit

    tokenizer = _tokenizer()
    rows = ner_rows(128, 0)
    split = TaggedSplit([r["words"] for r in rows], [[NER_TAGS.index(t) for t in r["tags"]] for r in rows])
    encoded = TaggedEncoded(tokenizer, split, 32)
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(**TINY, **ner_labels())).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = encoded.train_batches(16, 0, with_labels=True)
    with one_thread():
        for _ in range(30):
            loss = model(**next(batches)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@functools.cache
def trained_reader() -> dict:
    """The tiny QA model's weights after 60 steps on the train rows' windows."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from hubcompress.pipeline.tasks.question_answering import QASplit, SpanEncoded

    rows = qa_rows(160, 0)
    split = QASplit([r["question"] for r in rows], [r["context"] for r in rows],
                    [list(zip(r["answers"]["text"], r["answers"]["answer_start"])) for r in rows], doc_stride=8)
    encoded = SpanEncoded(_tokenizer(), split, 32)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(**TINY)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = encoded.train_batches(16, 0, with_labels=True)
    with one_thread():
        for _ in range(60):
            loss = model(**next(batches)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def ner_labels() -> dict:
    return {"num_labels": len(NER_TAGS), "id2label": dict(enumerate(NER_TAGS)),
            "label2id": {t: i for i, t in enumerate(NER_TAGS)}}


def make_token_task_inputs(root: Path) -> Path:
    """Write under ``root``: ``tiny-ner/``, ``tiny-qa/`` (trained tiny BERTs with their tokenizer),
    ``tiny-base/`` (an untrained ``BertModel`` without head, the same tokenizer) and
    ``data/ner_{train,validation}.jsonl``, ``data/squad_{train,validation}.jsonl``."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertForTokenClassification, BertModel

    root.mkdir(parents=True, exist_ok=True)
    for name, cls, config, weights in (
            ("tiny-ner", BertForTokenClassification, BertConfig(**TINY, **ner_labels()), trained_tagger()),
            ("tiny-qa", BertForQuestionAnswering, BertConfig(**TINY), trained_reader())):
        model = cls(config)
        model.load_state_dict(weights)
        model.save_pretrained(root / name)
        _tokenizer().save_pretrained(root / name)
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(root / "tiny-base")
    _tokenizer().save_pretrained(root / "tiny-base")
    data = root / "data"
    data.mkdir(exist_ok=True)
    for split, n, seed in (("train", 128, 0), ("validation", 48, 1)):
        (data / f"ner_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ner_rows(n, seed)))
    for split, n, seed in (("train", 160, 0), ("validation", 40, 1)):
        (data / f"squad_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows(n, seed)))
    return root


NER_RECIPE = """\
task: token-classification
data:
  files: {train: data/ner_train.jsonl, validation: data/ner_validation.jsonl}
  tokens_column: words
  tags_column: tags
  max_length: 32
pruning: {pruner: TaylorPruner, heads: 0.5, ffn: 0.5, schedule: {kind: agp, interval_steps: 2, total_times: 2}}
distillation: {distiller: DynamicLayerwiseDistiller}
training: {steps: 8, lr: 1.0e-3, batch_size: 16, device: cpu}
export: {int8: dynamic}
validation: {max_metric_drop: 100, min_int8_agreement: 0.5}
card: {base_model: tester/tiny-ner, license: apache-2.0}
"""

QA_RECIPE = """\
task: question-answering
data:
  files: {train: data/squad_train.jsonl, validation: data/squad_validation.jsonl}
  max_length: 32
  doc_stride: 8
pruning: {pruner: TaylorPruner, heads: 0.5, ffn: 0.5, schedule: {kind: agp, interval_steps: 2, total_times: 2}}
distillation: {distiller: DynamicLayerwiseDistiller}
training: {steps: 8, lr: 1.0e-3, batch_size: 16, device: cpu}
export: {int8: dynamic}
validation: {max_metric_drop: 100, min_int8_agreement: 0.5}
card: {base_model: tester/tiny-qa, license: apache-2.0}
"""
