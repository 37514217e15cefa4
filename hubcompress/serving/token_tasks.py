"""Serving token-level tasks: ``token-classification`` (the entities of each text, as transformers'
token-classification pipeline returns them with ``aggregation_strategy="simple"``) and
``question-answering`` (the best answer span of each question in its context, as its
question-answering pipeline returns it).

``/predict`` of a question-answering model takes ``{"inputs": [{"question": ..., "context": ...}, ...]}``;
a context longer than the model's limit is cut into overlapping windows (a quarter of the limit
apart from each other's ends), all run, and the best span of any window wins. The v2 protocol
serves the graph's ``start_logits`` / ``end_logits`` and ``span_logits`` (both, ``[batch, sequence, 2]``);
token classification adds ``probabilities`` per token (``[batch, sequence, labels]``).

Example:
    >>> parse_qa_inputs({"inputs": {"question": "who?", "context": "Ada wrote it."}}, max_items=4)
    [('who?', 'Ada wrote it.')]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hubcompress.serving.postprocess import softmax
from hubcompress.serving.request_errors import InvalidRequest
from hubcompress.serving.spans import best_span, group_entities
from hubcompress.serving.tasks import ServedTask, register_served_task
from hubcompress.serving.text_encoding import EncodedTexts

if TYPE_CHECKING:
    from hubcompress.serving.runtime import ServedModel


def _entities(model: ServedModel, probabilities: np.ndarray, encoded: EncodedTexts) -> dict[str, Any]:
    tokenizer = model.encoder.tokenizer
    out = []
    for row, (text, cut) in enumerate(zip(encoded.texts, encoded.truncated)):
        # The same tokenizer as the feeds', asked for what the feeds do not carry: character offsets.
        enc = tokenizer(text, truncation=True, max_length=model.max_tokens, return_offsets_mapping=True,
                        return_special_tokens_mask=True)
        offsets = [None if special else tuple(o) for o, special in zip(enc["offset_mapping"], enc["special_tokens_mask"])]
        entities = group_entities(probabilities[row, :len(offsets)], offsets, enc["input_ids"], model.folder.id2label,
                                  lambda ids: tokenizer.decode(ids))
        out.append({"entities": entities, "truncated": cut})
    return {"predictions": out}


register_served_task(ServedTask(
    name="token-classification", head_suffixes=("ForTokenClassification",), output="probabilities", source="logits",
    derive=lambda model, feeds, outputs: softmax(outputs["logits"]), predict=_entities, labelled=True,
    per_token=True))


def parse_qa_inputs(body: Any, max_items: int) -> list[tuple[str, str]]:
    """The (question, context) pairs of a question-answering ``/predict`` body; one object counts as a list of one."""
    items = body.get("inputs") if isinstance(body, dict) else None
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise InvalidRequest('the body must be a JSON object with "inputs": a list of {"question": ..., "context": ...}')
    if len(items) > max_items:
        raise InvalidRequest(f"{len(items)} inputs in one request, over this server's limit of {max_items}")
    pairs = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k].strip()
                                                 for k in ("question", "context")):
            raise InvalidRequest(f'inputs[{index}] must be {{"question": "...", "context": "..."}} with both non-empty')
        pairs.append((item["question"], item["context"]))
    return pairs


@dataclass
class EncodedQuestions(EncodedTexts):
    """Question + context windows: ``input_of_row`` maps each feed row to its input, ``offsets`` gives each
    context token's characters (None for the question and special tokens)."""

    contexts: list[str] = field(default_factory=list)
    input_of_row: list[int] = field(default_factory=list)
    offsets: list[list[tuple[int, int] | None]] = field(default_factory=list)


def encode_questions(model: ServedModel, body: Any) -> EncodedQuestions:
    pairs = parse_qa_inputs(body, model.settings.max_items)
    limit = model.encoder.max_text_chars
    for index, (question, context) in enumerate(pairs):
        if len(question) + len(context) > limit:
            raise InvalidRequest(f"inputs[{index}] has {len(question) + len(context)} characters, over this server's "
                                 f"limit of {limit}; shorten the context")
    try:
        enc = model.encoder.tokenizer([q for q, _ in pairs], [c for _, c in pairs], truncation="only_second",
                                      max_length=model.max_tokens, stride=model.max_tokens // 4,
                                      return_overflowing_tokens=True, return_offsets_mapping=True, padding=True)
    except Exception as error:  # the question alone does not fit the model's limit
        raise InvalidRequest(f"a question leaves no room for its context in {model.max_tokens} tokens: {error}") \
            from None
    names = [spec.name for spec in model.signature.inputs]
    feeds = {name: np.asarray(enc[name], dtype=np.int64) for name in names if name in enc}
    if "token_type_ids" in names and "token_type_ids" not in feeds:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    offsets = [[tuple(o) if enc.sequence_ids(f)[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][f])]
               for f in range(len(enc["input_ids"]))]
    return EncodedQuestions(feeds, [False] * len(pairs), [q for q, _ in pairs], contexts=[c for _, c in pairs],
                            input_of_row=list(enc["overflow_to_sample_mapping"]), offsets=offsets)


def _answers(model: ServedModel, span_logits: np.ndarray, encoded: EncodedTexts) -> dict[str, Any]:
    if not isinstance(encoded, EncodedQuestions):
        raise InvalidRequest('question-answering takes {"inputs": [{"question": ..., "context": ...}]}')
    best: dict[int, Any] = {}
    for row, offsets in enumerate(encoded.offsets):
        span = best_span(span_logits[row, :, 0], span_logits[row, :, 1], offsets)
        which = encoded.input_of_row[row]
        if span is not None and (which not in best or span.score > best[which].score):
            best[which] = span
    out = []
    for index, context in enumerate(encoded.contexts):
        span = best.get(index)
        out.append({"answer": "", "score": 0.0, "start": 0, "end": 0} if span is None else
                   {"answer": context[span.start_char:span.end_char], "score": round(span.score, 6),
                    "start": span.start_char, "end": span.end_char})
    return {"predictions": out}


def _span_logits(model: ServedModel, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.stack([outputs["start_logits"], outputs["end_logits"]], axis=-1).astype(np.float32)


register_served_task(ServedTask(
    name="question-answering", head_suffixes=("ForQuestionAnswering",), output="span_logits", source="start_logits",
    derive=_span_logits, predict=_answers, width=lambda model, source_width: 2, per_token=True,
    encode_request=encode_questions))
