"""What a language model's eval rows keep: per predicted token, not the whole vocabulary.

A row per example is an array ``(targets, 2 + 2k)``; each target token (a masked token, or the next
token) is ``[true id, log-prob of the true id, top-k ids, top-k logits]`` (k = :data:`TOP_K`, ids
stored as float32: exact below 2**24). Full logits would be ``(targets, vocab)``: 30k-50k floats
a token, gigabytes for a few hundred texts per model.

The parity with the PyTorch student reads the continuous parts (the true token's log-prob and the
sorted top-k logits, which move little when two ids swap rank) for ``max_abs_diff``, and the top-1
ids for ``argmax_agreement``.

Example:
    >>> import numpy as np
    >>> row = target_rows(np.array([[0.0, 2.0, 1.0]]), np.array([2]), k=2)
    >>> row[:, 0].tolist(), row[:, 2:4].tolist(), row[:, 4:].tolist()
    ([2.0], [[1.0, 2.0]], [[2.0, 1.0]])
    >>> quality = lm_quality([row], [row])
    >>> quality["accuracy"], quality["top2_accuracy"], quality["agreement_with_teacher"]
    (0.0, 1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Rows

TOP_K = 5  # what the fill-mask pipeline returns, and the "top-5" of the metrics


def target_rows(logits: np.ndarray, true_ids: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Rows ``[true id, its log-prob, top-k ids, top-k logits]`` of ``logits`` (targets, vocab)."""
    logits = np.asarray(logits, dtype=np.float32)
    k = min(k, logits.shape[-1])
    if not len(logits):
        return np.zeros((0, 2 + 2 * k), dtype=np.float32)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    true_ids = np.asarray(true_ids, dtype=np.int64)
    top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(logits, top, -1), axis=-1, kind="stable"), -1)
    return np.concatenate([true_ids[:, None].astype(np.float32),
                           np.take_along_axis(log_probs, true_ids[:, None], -1),
                           top.astype(np.float32), np.take_along_axis(logits, top, -1)], axis=1)


def _targets(rows: Rows) -> np.ndarray:
    parts = [np.asarray(r, dtype=np.float64).reshape(-1, np.shape(r)[-1]) for r in rows]
    return np.concatenate(parts) if parts else np.zeros((0, 2 + 2 * TOP_K))


def _k(table: np.ndarray) -> int:
    return (table.shape[1] - 2) // 2


def lm_quality(rows: Rows, teacher: Rows) -> dict[str, Any]:
    """Top-1 and top-k accuracy on the true tokens, perplexity (exp of the mean negative log-prob),
    and agreement with the teacher: same top-1, and the top-1 among the teacher's top-k."""
    mine, theirs = _targets(rows), _targets(teacher)
    k = _k(mine)
    if not len(mine):
        return {}
    truth, top = mine[:, 0], mine[:, 2:2 + k]
    reference = theirs[:, 2:2 + _k(theirs)]
    return {"accuracy": float(np.mean(top[:, 0] == truth)),
            f"top{k}_accuracy": float(np.mean((top == truth[:, None]).any(1))),
            "perplexity": float(np.exp(-np.mean(mine[:, 1]))),
            "agreement_with_teacher": float(np.mean(top[:, 0] == reference[:, 0])),
            f"top1_in_teacher_top{k}": float(np.mean((reference == top[:, :1]).any(1))),
            "tokens": int(len(mine))}


def lm_parity(reference: Rows, candidate: Rows, row_name: str) -> dict[str, Any]:
    """An exported file's rows against the PyTorch student's (see the module docstring)."""
    ref, cand = _targets(reference), _targets(candidate)
    if ref.shape != cand.shape:
        raise ValueError(f"{row_name}: {cand.shape[0]} target tokens against {ref.shape[0]}")
    k = _k(ref)
    continuous = np.r_[1, 2 + k:2 + 2 * k]
    diff = np.abs(ref[:, continuous] - cand[:, continuous])
    return {row_name: {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
                       "mean_abs_diff": float(diff.mean()) if diff.size else 0.0},
            "argmax_agreement": float(np.mean(ref[:, 2] == cand[:, 2])) if len(ref) else 1.0}
