"""``question-answering``: extractive QA in the SQuAD format. Rows hold ``data.question_column``,
``data.context_column`` and ``data.answers_column`` (``{text: [...], answer_start: [...]}``, character
offsets into the context). A question and its context become one or more features (the context cut
into windows of ``data.max_length`` tokens overlapping by ``data.doc_stride``); a feature's training
targets are the first answer's start and end tokens, or the [CLS] token when the answer is not in
its window. The head's own loss trains; distillation adds a KL between the student's and the
teacher's start (and end) distributions over the sequence (``qa_outputs``, ``apply_method: kl_seq``).

Rows are per feature: its start and end logits, (2, max_length), padded with -1e4 past the feature's
tokens, so an int8 file's argmax agreement is the agreement of start and end positions. The answer of
an example is the best span over its features (end >= start, at most 30 tokens, start x end
probability, as transformers' pipeline picks it); metrics are SQuAD's exact match and F1 (lowercase,
punctuation and articles removed, whitespace collapsed), best over the gold answers, and how often
the answer is the teacher's.

Example:
    >>> normalize_answer("The  Eiffel Tower!")
    'eiffel tower'
    >>> squad_f1("the Eiffel tower", "Eiffel Tower in Paris"), exact_match("Paris.", "paris")
    (0.6666666666666666, 1.0)
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import DataError
from ...serving.spans import best_span
from ..batches import Encoded
from .base import TaskSpec, labelled_loss, register_task
from .records import load_records

PADDED = -1e4  # a row's logits past the feature's own tokens (equal in every backend, so parity sees 0)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token overlap F1 of the normalised answers."""
    predicted, reference = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not reference:
        return float(predicted == reference)
    common = sum((collections.Counter(predicted) & collections.Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(reference)
    return 2 * precision * recall / (precision + recall)


@dataclass
class QASplit:
    """Questions, contexts and gold answers (texts and character starts), row by row."""

    questions: list[str]
    contexts: list[str]
    answers: list[list[tuple[str, int]]]
    doc_stride: int = 32

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def texts(self) -> list[str]:
        """The questions: the first segment, what latency and the consumer check tokenise."""
        return self.questions


@dataclass
class QAData:
    train: QASplit | None
    eval: QASplit
    name: str
    dataset_id: str
    label_names: None = None


def _answers(value: Any, context: str, place: str, column: str) -> list[tuple[str, int]]:
    if not isinstance(value, dict) or not isinstance(value.get("text"), list) or \
            not isinstance(value.get("answer_start"), list) or len(value["text"]) != len(value["answer_start"]):
        raise DataError(f"{place}: column {column!r} must be {{\"text\": [...], \"answer_start\": [...]}} with one start "
                        "per answer (the SQuAD format). Fix the row, or set data.answers_column.")
    out = []
    for text, start in zip(value["text"], value["answer_start"]):
        if not isinstance(start, int) or context[start:start + len(text)] != text:
            raise DataError(f"{place}: answer {text!r} is not at character {start} of the context. Fix answer_start.")
        out.append((text, start))
    return out


def load_qa_data(ctx: Any) -> QAData:
    """The recipe's SQuAD-format rows (see :func:`~hubcompress.pipeline.tasks.records.load_records`)."""
    s = ctx.recipe.data
    if s.doc_stride >= s.max_length // 2:
        raise DataError(f"data.doc_stride {s.doc_stride} must be under half of data.max_length {s.max_length}: "
                        "the windows of a long context overlap by it. Lower it.")
    found = load_records(s, {"data.question_column": s.question_column, "data.context_column": s.context_column,
                             "data.answers_column": s.answers_column},
                         base_dir=ctx.recipe_dir, seed=ctx.recipe.training.seed, need_train=ctx.needs_train_split,
                         structured=(s.answers_column,))
    out: dict[str, QASplit | None] = {"train": None}
    for key, split in found.splits.items():
        if split is None:
            continue
        for row, place in zip(split.rows, split.places):
            for column in (s.question_column, s.context_column):
                if not isinstance(row[column], str) or not row[column].strip():
                    raise DataError(f"{place}: empty text in column {column!r}. Fill it in or delete the row.")
        out[key] = QASplit([r[s.question_column] for r in split.rows], [r[s.context_column] for r in split.rows],
                           [_answers(r[s.answers_column], r[s.context_column], p, s.answers_column)
                            for r, p in zip(split.rows, split.places)], s.doc_stride)
    return QAData(out["train"], out["eval"], found.name, found.dataset_id)


class SpanEncoded(Encoded):
    """Question + context windows: ``example[f]`` is feature ``f``'s row in the split, ``offsets[f]`` the
    character span of each context token (None for question and special tokens), and the training
    targets are ``start_positions`` / ``end_positions``."""

    def __init__(self, tokenizer: Any, split: QASplit, max_length: int):
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("question-answering maps answers to tokens through a fast tokenizer's offsets; the "
                            "model's tokenizer has no fast version (tokenizer.json). Save one with the model.")
        self.tokenizer, self.max_length, self.labels = tokenizer, max_length, None
        try:
            enc = tokenizer(split.questions, split.contexts, truncation="only_second", max_length=max_length,
                            stride=split.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
        except Exception as error:  # the tokenizer refuses a question that leaves no room for the context
            raise DataError(f"cannot cut the contexts into windows of data.max_length {max_length} tokens with "
                            f"data.doc_stride {split.doc_stride} ({error}). Raise max_length or shorten the questions.") \
                from None
        inputs = [k for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping")]
        self.features = [{k: enc[k][f] for k in inputs} for f in range(len(enc["input_ids"]))]
        self.example: list[int] = list(enc["overflow_to_sample_mapping"])
        self.offsets: list[list[tuple[int, int] | None]] = []
        self.positions: list[tuple[int, int]] = []
        for f, example in enumerate(self.example):
            sequence = enc.sequence_ids(f)
            offsets = [tuple(o) if sequence[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][f])]
            self.offsets.append(offsets)
            self.positions.append(self._answer_tokens(offsets, split.answers[example], enc["input_ids"][f]))

    def _answer_tokens(self, offsets: list[tuple[int, int] | None], answers: list[tuple[str, int]],
                       ids: list[int]) -> tuple[int, int]:
        cls = ids.index(self.tokenizer.cls_token_id) if self.tokenizer.cls_token_id in ids else 0
        if not answers:
            return cls, cls
        text, start = answers[0]
        end = start + len(text)
        inside = [k for k, o in enumerate(offsets) if o is not None]
        if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:
            return cls, cls  # the answer is not (wholly) in this window
        first = next(k for k in inside if offsets[k][1] > start)
        last = next(k for k in reversed(inside) if offsets[k][0] < end)
        return first, last

    def batch(self, index: Sequence[int], *, pad_to: int | None = None, with_labels: bool = False) -> dict[str, torch.Tensor]:
        batch = super().batch(index, pad_to=pad_to)
        if with_labels:
            batch["start_positions"] = torch.tensor([self.positions[f][0] for f in index], dtype=torch.long)
            batch["end_positions"] = torch.tensor([self.positions[f][1] for f in index], dtype=torch.long)
        return batch


def span_rows(out: Any, batch: Any, index: Sequence[int], data: SpanEncoded, pooling: Any) -> list[np.ndarray]:
    """Per feature, its start and end logits over ``max_length`` positions (padded with -1e4)."""
    rows = []
    for row, f in enumerate(index):
        length = len(data.features[f]["input_ids"])
        value = np.full((2, data.max_length), PADDED, dtype=np.float32)
        value[0, :length] = out["start_logits"][row, :length]
        value[1, :length] = out["end_logits"][row, :length]
        rows.append(value)
    return rows


def answers(rows: Any, data: SpanEncoded, split: QASplit) -> list[tuple[str, int, int]]:
    """Each example's best span over its features: (answer text, start char, end char)."""
    best: dict[int, Any] = {}
    for f, row in enumerate(rows):
        span = best_span(row[0], row[1], data.offsets[f])
        example = data.example[f]
        if span is not None and (example not in best or span.score > best[example].score):
            best[example] = span
    out = []
    for i, context in enumerate(split.contexts):
        span = best.get(i)
        out.append(("", 0, 0) if span is None else (context[span.start_char:span.end_char], span.start_char,
                                                     span.end_char))
    return out


def start_predictions(ctx: Any, rows: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every window's predicted and true start token: the teacher stage holds the start accuracy to always
    answering the commonest start (usually [CLS], in the windows without the answer)."""
    return (np.array([np.asarray(row[0]).argmax() for row in rows]),
            np.array([start for start, _ in ctx.encoded("eval").positions]))


def qa_quality(rows: dict[str, Any], teacher: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Exact match and F1 (SQuAD), best over each example's gold answers; agreement of spans with the teacher's."""
    data, split = ctx.encoded("eval"), ctx.data.eval
    predicted, reference = answers(rows["eval"], data, split), answers(teacher["eval"], data, split)
    golds = [[text for text, _ in gold] or [""] for gold in split.answers]
    em = [max(exact_match(p[0], g) for g in gold) for p, gold in zip(predicted, golds)]
    f1 = [max(squad_f1(p[0], g) for g in gold) for p, gold in zip(predicted, golds)]
    agree = [p[1:] == t[1:] for p, t in zip(predicted, reference)]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1)), "agreement_with_teacher": float(np.mean(agree))}


QUESTION_ANSWERING = register_task(TaskSpec(
    name="question-answering", auto_class="AutoModelForQuestionAnswering", outputs=("start_logits", "end_logits"),
    row_name="span_logits", rows=span_rows, quality=qa_quality, primary_metric="f1", agreement="argmax",
    loss=labelled_loss, has_task_loss=True, needs_labels=True, distill_head="qa_outputs", distill_method="kl_seq",
    load_data=load_qa_data, encode=lambda tokenizer, split, max_length: SpanEncoded(tokenizer, split, max_length),
    finetunes_teacher=True, label_key="answers_column", predictions=start_predictions, against_teacher=("agreement_with_teacher",)))
