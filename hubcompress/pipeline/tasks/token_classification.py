"""``token-classification`` (NER, POS): one tag per word. Rows hold a list of words
(``data.tokens_column``) and a list of tags (``data.tags_column``: names, or ids of the model's
labels); the tags are aligned to sub-tokens (the first sub-token of a word gets its tag, the others
-100, which the loss skips), the head's own loss trains, and the metrics read one logit row per
word (the first sub-token's): entity-level precision / recall / F1 as seqeval computes them
(conlleval's IOB rules, what transformers' NER examples report), token accuracy and agreement with
the teacher's tags. Words cut off by ``data.max_length`` are left out of the metrics, as
transformers' examples do. A tag set that is not IOB (POS tags) has no entities: every word
counts as one, so precision = recall = F1 = accuracy.

Example:
    >>> import numpy as np
    >>> entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])["f1"]
    1.0
    >>> entity_scores([["NN", "VB"]], [["NN", "NN"]])["f1"]
    0.5
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import DataError
from ..batches import Encoded
from .base import TaskSpec, labelled_loss, register_task
from .records import load_records

IGNORE = -100  # what transformers' token-classification losses skip
_IOB = re.compile(r"(O|[BIES]-.+)")


@dataclass
class TaggedSplit:
    """Words and their tag ids, row by row.

    Example:
        >>> TaggedSplit([["Ada", "wrote"]], [[1, 0]]).texts
        ['Ada wrote']
    """

    words: list[list[str]]
    tags: list[list[int]]

    def __len__(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> list[str]:
        """The words joined with spaces: what latency and the consumer check tokenise."""
        return [" ".join(words) for words in self.words]


@dataclass
class TaggedData:
    train: TaggedSplit | None
    eval: TaggedSplit
    name: str
    dataset_id: str
    label_names: list[str]


def _model_labels(ctx: Any) -> list[str] | None:
    """The classes of the model's token-classification head (None: it has none, or never named them)."""
    if ctx.missing_head:
        return None
    id2label = getattr(ctx.model_config, "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label, key=int)]
    return None if not names or all(re.fullmatch(r"LABEL_\d+", n) for n in names) else names


def _class_names(features: Any, column: str) -> list[str] | None:
    # A hub dataset's Sequence(ClassLabel) stores ids and names the classes in its features.
    feature = features.get(column) if features is not None else None
    inner = getattr(feature, "feature", None)
    return list(inner.names) if getattr(inner, "names", None) else None


def _sorted_tags(names: set[str]) -> list[str]:
    # "O" first, then each entity type's B- before its I-, as NER checkpoints order them.
    return sorted(names, key=lambda n: (n != "O", n[2:] if _IOB.fullmatch(n) else n, n))


def tag_ids(rows: list[list[Any]], places: list[str], column: str, model: list[str] | None,
            class_names: list[str] | None) -> tuple[list[list[int]], list[str]]:
    """Each row's tags as ids of the label list returned: the model's labels when it names them, else
    the data's tag names (sorted, "O" first).

    Example:
        >>> tag_ids([["B-PER", "O"]], ["row 1"], "tags", None, None)
        ([[1, 0]], ['O', 'B-PER'])
        >>> tag_ids([[2, 0]], ["row 1"], "tags", ["O", "B-LOC", "I-LOC"], None)
        ([[2, 0]], ['O', 'B-LOC', 'I-LOC'])
    """
    if class_names is not None:
        rows = [[class_names[t] if isinstance(t, int) and 0 <= t < len(class_names) else t for t in r] for r in rows]
    kinds = {type(t) for r in rows for t in r}
    if kinds - {int, str}:
        raise DataError(f"{places[0]}: column {column!r} holds {sorted(k.__name__ for k in kinds - {int, str})}; "
                        "each tag must be a tag name or a label id. Fix data.tags_column.")
    if kinds == {int, str}:
        raise DataError(f"column {column!r} mixes tag names and label ids ({places[0]}); use one kind.")
    if kinds == {int}:
        names = model or class_names
        if names is None:
            top = max(t for r in rows for t in r)
            names = [str(i) for i in range(top + 1)]
        for r, place in zip(rows, places):
            bad = next((t for t in r if not 0 <= t < len(names)), None)
            if bad is not None:
                raise DataError(f"{place}: tag id {bad} is outside the model's {len(names)} labels. Fix the data, "
                                "or start from a model with these labels.")
        return [list(r) for r in rows], names
    names = model or _sorted_tags({t for r in rows for t in r})
    lookup = {n: i for i, n in enumerate(names)}
    out = []
    for r, place in zip(rows, places):
        bad = next((t for t in r if t not in lookup), None)
        if bad is not None:
            raise DataError(f"{place}: tag {bad!r} is not one of the model's labels ({', '.join(names)}). Fix the "
                            "data, or start from a model trained on these tags.")
        out.append([lookup[t] for t in r])
    return out, names


def _check_row(words: Any, tags: Any, place: str, section: Any) -> None:
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise DataError(f"{place}: column {section.tokens_column!r} must be a non-empty list of words (strings). "
                        "Fix the row, or set data.tokens_column.")
    if not isinstance(tags, list) or len(tags) != len(words):
        shown = len(tags) if isinstance(tags, list) else type(tags).__name__
        raise DataError(f"{place}: {len(words)} words but {shown} tags in column {section.tags_column!r}: one tag "
                        "per word. Fix the row, or set data.tags_column.")


def load_tagged_data(ctx: Any) -> TaggedData:
    """The recipe's word / tag rows (see :func:`~hubcompress.pipeline.tasks.records.load_records`)."""
    section = ctx.recipe.data
    found = load_records(section, {"data.tokens_column": section.tokens_column, "data.tags_column": section.tags_column},
                         base_dir=ctx.recipe_dir, seed=ctx.recipe.training.seed, need_train=ctx.needs_train_split,
                         structured=(section.tokens_column, section.tags_column))
    splits = {k: s for k, s in found.splits.items() if s is not None}
    for split in splits.values():
        for row, place in zip(split.rows, split.places):
            _check_row(row[section.tokens_column], row[section.tags_column], place, section)
    rows = [row[section.tags_column] for s in splits.values() for row in s.rows]
    places = [place for s in splits.values() for place in s.places]
    ids, names = tag_ids(rows, places, section.tags_column, _model_labels(ctx),
                         _class_names(splits["eval"].features, section.tags_column))
    out: dict[str, TaggedSplit | None] = {"train": None}
    start = 0
    for key, split in splits.items():
        out[key] = TaggedSplit([row[section.tokens_column] for row in split.rows], ids[start:start + len(split.rows)])
        start += len(split.rows)
    return TaggedData(out["train"], out["eval"], found.name, found.dataset_id, names)


class TaggedEncoded(Encoded):
    """Words tokenised as pre-split input; ``first_tokens[i]`` are the positions of each kept word's
    first sub-token in row ``i``, whose training labels are the word's tag (-100 elsewhere)."""

    def __init__(self, tokenizer: Any, split: TaggedSplit, max_length: int):
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("token-classification aligns tags to sub-tokens through a fast tokenizer's word ids; the "
                            "model's tokenizer has no fast version (tokenizer.json). Save one with the model.")
        self.tokenizer, self.max_length = tokenizer, max_length
        enc = tokenizer(split.words, is_split_into_words=True, truncation=True, max_length=max_length)
        self.features = [{k: enc[k][i] for k in enc} for i in range(len(split))]
        self.first_tokens: list[list[int]] = []
        self.token_labels: list[list[int]] = []
        for i, tags in enumerate(split.tags):
            labels, firsts, previous = [], [], None
            for position, word in enumerate(enc.word_ids(i)):
                first = word is not None and word != previous
                labels.append(tags[word] if first else IGNORE)
                if first:
                    firsts.append(position)
                previous = word
            self.first_tokens.append(firsts)
            self.token_labels.append(labels)
        self.labels = None

    def batch(self, index: Sequence[int], *, pad_to: int | None = None, with_labels: bool = False) -> dict[str, torch.Tensor]:
        batch = super().batch(index, pad_to=pad_to)
        if with_labels:
            labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
            for row, i in enumerate(index):
                labels[row, :len(self.token_labels[i])] = torch.tensor(self.token_labels[i])
            batch["labels"] = labels
        return batch


def word_rows(out: Any, batch: Any, index: Sequence[int], data: TaggedEncoded, pooling: Any) -> list[np.ndarray]:
    """Per example, the logits of each kept word's first sub-token: (words, labels)."""
    return [np.asarray(out["logits"][row, data.first_tokens[i]]) for row, i in enumerate(index)]


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Entity-level precision, recall and F1 (seqeval, conlleval's rules) for IOB tags; for any other
    tag set, word-level accuracy in all three."""
    if all(_IOB.fullmatch(t) for row in gold for t in row):
        from seqeval.metrics import f1_score, precision_score, recall_score

        return {"precision": float(precision_score(gold, predicted, zero_division=0)),
                "recall": float(recall_score(gold, predicted, zero_division=0)),
                "f1": float(f1_score(gold, predicted, zero_division=0))}
    hits = [g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps)]
    accuracy = float(np.mean(hits)) if hits else 0.0
    return {"precision": accuracy, "recall": accuracy, "f1": accuracy}


def word_predictions(ctx: Any, rows: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every scored word's predicted and true tag id (the teacher stage's accuracy and majority tag)."""
    predicted = [np.asarray(r).argmax(-1) for r in rows]
    return (np.concatenate(predicted),
            np.concatenate([np.asarray(tags[:len(p)]) for tags, p in zip(ctx.data.eval.tags, predicted)]))


def tagging_quality(rows: dict[str, Any], teacher: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Entity precision / recall / F1, token accuracy, and how often a word's tag is the teacher's."""
    names = ctx.data.label_names
    predicted = [np.asarray(r).argmax(-1) for r in rows["eval"]]
    reference = [np.asarray(r).argmax(-1) for r in teacher["eval"]]
    gold = [tags[:len(p)] for tags, p in zip(ctx.data.eval.tags, predicted)]
    words = np.concatenate([np.asarray(g) == p for g, p in zip(gold, predicted)])
    agree = np.concatenate([p == t for p, t in zip(predicted, reference)])
    scores = entity_scores([[names[t] for t in g] for g in gold], [[names[int(t)] for t in p] for p in predicted])
    return {**scores, "accuracy": float(words.mean()), "agreement_with_teacher": float(agree.mean())}


TOKEN_CLASSIFICATION = register_task(TaskSpec(
    name="token-classification", auto_class="AutoModelForTokenClassification", outputs=("logits",),
    row_name="word_logits", rows=word_rows, quality=tagging_quality, primary_metric="f1", agreement="argmax",
    loss=labelled_loss, has_task_loss=True, needs_labels=True, distill_head="classifier",
    load_data=load_tagged_data, encode=lambda tokenizer, split, max_length: TaggedEncoded(tokenizer, split, max_length),
    finetunes_teacher=True, label_key="tags_column", predictions=word_predictions, against_teacher=("agreement_with_teacher",)))
