"""Post-processing of token-level outputs into what users of transformers' pipelines expect:
the best answer span of an extractive question-answering model, and the entities of a token
classifier grouped as ``aggregation_strategy="simple"`` groups them. Plain numpy: the validate
stage and the server share it.

Example:
    >>> import numpy as np
    >>> start, end = np.array([0.0, 5.0, 0.0]), np.array([0.0, 0.0, 5.0])
    >>> span = best_span(start, end, [None, (0, 3), (4, 9)])
    >>> span.start_token, span.end_token, span.start_char, span.end_char
    (1, 2, 0, 9)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_ANSWER_TOKENS = 30  # transformers' question-answering pipeline's max_answer_len
_MASKED = -1e4


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


@dataclass(frozen=True)
class Span:
    """An answer span: its score (start probability x end probability), tokens and character offsets."""

    score: float
    start_token: int
    end_token: int
    start_char: int
    end_char: int


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[tuple[int, int] | None], *,
              max_answer_tokens: int = MAX_ANSWER_TOKENS, cls_index: int | None = 0) -> Span | None:
    """The span of context tokens (``offsets`` not None) with the highest start x end probability,
    ``end >= start`` and at most ``max_answer_tokens`` long; None when the window holds no context.

    The probabilities are softmaxes over the context tokens and the ``cls_index`` token, as
    transformers' pipeline computes them (its score of a span is the same number).
    """
    n = min(len(offsets), len(start_logits))
    allowed = np.array([offsets[i] is not None for i in range(n)])
    if not allowed.any():
        return None
    scored = allowed | (np.arange(n) == cls_index)
    starts = _softmax(np.where(scored, np.asarray(start_logits[:n], dtype=np.float64), _MASKED))
    ends = _softmax(np.where(scored, np.asarray(end_logits[:n], dtype=np.float64), _MASKED))
    scores = np.outer(starts, ends)
    # end >= start, and no longer than max_answer_tokens; never outside the context.
    scores = np.triu(np.tril(scores, max_answer_tokens - 1)) * np.outer(allowed, allowed)
    s, e = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return Span(float(scores[s, e]), int(s), int(e), int(offsets[s][0]), int(offsets[e][1]))


def _tag(label: str) -> tuple[str, str]:
    # transformers' get_tag: "B-PER" -> ("B", "PER"); a tag without a prefix counts as inside its own group.
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def group_entities(probabilities: np.ndarray, offsets: Sequence[tuple[int, int] | None], token_ids: Sequence[int],
                   id2label: dict[int, str], decode: Callable[[list[int]], str]) -> list[dict[str, Any]]:
    """The entities of one text, as transformers' token-classification pipeline returns them with
    ``aggregation_strategy="simple"``: adjacent tokens of one entity type (a ``B-`` tag starts a new
    one) become ``{entity_group, score (their mean), word, start, end}``; ``O`` groups are dropped.
    ``offsets`` is None for special tokens.

    Example:
        >>> import numpy as np
        >>> probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.0, 0.8], [0.9, 0.1, 0.0]])
        >>> group_entities(probs, [(0, 3), (4, 8), (9, 14)], [7, 8, 9], {0: "O", 1: "B-PER", 2: "I-PER"},
        ...                lambda ids: " ".join(map(str, ids)))
        [{'entity_group': 'PER', 'score': 0.85, 'word': '7 8', 'start': 0, 'end': 8}]
    """
    groups: list[list[dict[str, Any]]] = []
    for position, offset in enumerate(offsets):
        if offset is None:
            continue
        best = int(np.argmax(probabilities[position]))
        token = {"label": id2label.get(best, f"LABEL_{best}"), "score": float(probabilities[position, best]),
                 "id": int(token_ids[position]), "start": int(offset[0]), "end": int(offset[1])}
        bi, tag = _tag(token["label"])
        if groups and bi != "B" and _tag(groups[-1][-1]["label"])[1] == tag:
            groups[-1].append(token)
        else:
            groups.append([token])
    out = []
    for group in groups:
        tag = _tag(group[0]["label"])[1]
        if tag == "O":
            continue
        out.append({"entity_group": tag, "score": round(float(np.mean([t["score"] for t in group])), 6),
                    "word": decode([t["id"] for t in group]), "start": group[0]["start"], "end": group[-1]["end"]})
    return out
