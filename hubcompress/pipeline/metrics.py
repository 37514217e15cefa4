"""Metrics that compare a compressed model with its teacher: task scores, embedding fidelity, and
output parity between two runtimes. Pure functions on numpy arrays.

Example:
    >>> import numpy as np
    >>> accuracy(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 1]))
    0.75
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# Cosine summaries are read by people and diffed between runs; more digits than this is noise.
_DIGITS = 5


def _pair(a: Any, b: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError(f"{what}: no rows to compare")
    return a, b


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels.

    Example:
        >>> accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 0]))
        0.75
    """
    predictions, labels = _pair(predictions, labels, "accuracy")
    return float(np.mean(predictions == labels))


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """F1 averaged over classes with equal weight, so a rare class counts as much as a common one.

    Example:
        >>> round(macro_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0])), 4)
        0.7333
    """
    from sklearn.metrics import f1_score

    predictions, labels = _pair(predictions, labels, "macro_f1")
    return float(f1_score(labels, predictions, average="macro", zero_division=0))


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, 1e-12)
    # Two zero vectors are the same embedding; one zero vector is unrelated to anything.
    cos[(na == 0) & (nb == 0)] = 1.0
    return np.clip(cos, -1.0, 1.0)


def cosine_fidelity(student: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    """Row-wise cosine similarity of student and teacher embeddings: mean, min and 5th percentile.

    Arrays of more than two axes (token embeddings) are compared along the last axis.

    Example:
        >>> cosine_fidelity(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [1.0, 0.0]]))
        {'mean': 0.85355, 'min': 0.70711, 'p05': 0.72175}
    """
    student, teacher = _pair(student, teacher, "cosine_fidelity")
    cos = _row_cosines(np.atleast_2d(student), np.atleast_2d(teacher))
    return {"mean": round(float(cos.mean()), _DIGITS), "min": round(float(cos.min()), _DIGITS),
            "p05": round(float(np.percentile(cos, 5)), _DIGITS)}


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   seed: int = 0, max_iter: int = 1000) -> float:
    """Test accuracy of a logistic-regression probe trained on embeddings (MTEB's classification task).

    MTEB fits ``LogisticRegression`` on raw embeddings. Here the embeddings are L2-normalized first:
    sentence embeddings are used through cosine similarity, and compression often changes their
    norm without changing their direction, which should not move the score. No feature scaling
    beyond that, so the probe sees the geometry the model produced.

    Example:
        >>> x = np.array([[1.0, 0.1], [0.9, -0.1], [-1.0, 0.2], [-0.8, 0.0]])
        >>> probe_accuracy(x, np.array([0, 0, 1, 1]), x[::-1], np.array([1, 1, 0, 0]))
        1.0
    """
    from sklearn.linear_model import LogisticRegression

    def normalized(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    probe = LogisticRegression(max_iter=max_iter, random_state=seed)
    probe.fit(normalized(train_x), np.asarray(train_y))
    return accuracy(probe.predict(normalized(test_x)), np.asarray(test_y))


def parity(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], *,
           argmax_output: str | None = None, cosine_output: str | None = None) -> dict[str, Any]:
    """How far ``candidate``'s outputs (e.g. ONNX Runtime) are from ``reference``'s (e.g. PyTorch).

    Returns ``{output: {"max_abs_diff", "mean_abs_diff"}}`` for every output name in both, plus
    ``"argmax_agreement"`` (fraction of rows whose argmax over the last axis agree) for a
    classifier's ``argmax_output`` and ``"cosine"`` (`cosine_fidelity`) for an embedding ``cosine_output``.

    Raises:
        ValueError: no output in common, a named output missing, or an output's shapes differ.

    Example:
        >>> ref = {"logits": np.array([[1.0, 2.0], [3.0, 0.0]])}
        >>> parity(ref, {"logits": np.array([[1.0, 2.5], [3.0, 3.5]])}, argmax_output="logits")
        {'logits': {'max_abs_diff': 3.5, 'mean_abs_diff': 1.0}, 'argmax_agreement': 0.5}
    """
    common = [name for name in reference if name in candidate]
    if not common:
        raise ValueError(f"no output in common: reference has {sorted(reference)}, candidate has {sorted(candidate)}")
    out: dict[str, Any] = {}
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in common:
        ref, cand = _pair(reference[name], candidate[name], f"output {name!r}")
        arrays[name] = ref.astype(np.float64), cand.astype(np.float64)
        diff = np.abs(arrays[name][0] - arrays[name][1])
        out[name] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    for key, name in (("argmax_agreement", argmax_output), ("cosine", cosine_output)):
        if name is None:
            continue
        if name not in arrays:
            raise ValueError(f"{key}: output {name!r} is not in both; outputs in common: {', '.join(common)}")
        ref, cand = arrays[name]
        if key == "cosine":
            out[key] = cosine_fidelity(cand, ref)
        else:
            out[key] = float(np.mean(ref.argmax(-1) == cand.argmax(-1)))
    return out


def _cosine_matrix(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.maximum(norms, 1e-12)  # a zero row stays zero: similar to nothing
    return unit @ unit.T


def _rows_pair(student: np.ndarray, teacher: np.ndarray, what: str, at_least: int) -> tuple[np.ndarray, np.ndarray]:
    student, teacher = np.asarray(student), np.asarray(teacher)
    if student.ndim != 2 or teacher.ndim != 2 or len(student) != len(teacher):
        raise ValueError(f"{what}: expects two [texts, dim] arrays with the same number of texts, got "
                         f"{student.shape} and {teacher.shape}")
    if len(student) < at_least:
        raise ValueError(f"{what}: needs at least {at_least} texts, got {len(student)}")
    return student, teacher


def similarity_spearman(student: np.ndarray, teacher: np.ndarray) -> float:
    """Spearman correlation between the student's and the teacher's cosine similarities of every pair
    of texts (each pair once): 1 when the student ranks all pairs as the teacher does, whatever the
    similarity values themselves; about 0 when its similarities are unrelated to the teacher's.

    The widths may differ (only the n × n similarities are compared). A student whose similarities
    are all equal ranks nothing: 0.

    Example (rows at angles 0°, 10°, 30°, 70° and 0°, 10°, 25°, 70°: other similarities, same order):
        >>> def at(*degrees): return np.array([[np.cos(np.radians(d)), np.sin(np.radians(d))] for d in degrees])
        >>> similarity_spearman(at(0, 10, 25, 70), at(0, 10, 30, 70))
        1.0
        >>> similarity_spearman(at(0, 10, 45, 70), at(0, 10, 30, 70))  # one pair moves 2 ranks: 1 - 6·6 / (6·35)
        0.82857
    """
    from scipy.stats import spearmanr

    student, teacher = _rows_pair(student, teacher, "similarity_spearman", 3)
    upper = np.triu_indices(len(student), 1)
    s, t = _cosine_matrix(student)[upper], _cosine_matrix(teacher)[upper]
    if np.ptp(s) == 0 or np.ptp(t) == 0:
        return 0.0
    return round(float(spearmanr(s, t).statistic), _DIGITS)


def _neighbours(rows: np.ndarray, k: int) -> np.ndarray:
    sims = _cosine_matrix(rows)
    np.fill_diagonal(sims, -np.inf)  # a text is not its own neighbour
    # A stable sort breaks ties by row order, so the same embeddings always give the same neighbours.
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def topk_overlap(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> float:
    """Mean over texts of the share of its ``k`` nearest neighbours (cosine, the text itself left out)
    that the student and the teacher have in common: what a semantic search user sees change.

    ``k`` is capped at ``texts - 1``.

    Example (k=1: the third text's nearest neighbour moves from the second to the fourth):
        >>> def at(*degrees): return np.array([[np.cos(np.radians(d)), np.sin(np.radians(d))] for d in degrees])
        >>> topk_overlap(at(0, 10, 45, 70), at(0, 10, 30, 70), k=1)
        0.75
    """
    student, teacher = _rows_pair(student, teacher, "topk_overlap", 2)
    k = min(int(k), len(student) - 1)
    if k < 1:
        raise ValueError(f"topk_overlap: k must be at least 1, got {k}")
    ours, theirs = _neighbours(student, k), _neighbours(teacher, k)
    shared = [len(set(a) & set(b)) for a, b in zip(ours.tolist(), theirs.tolist())]
    return round(float(np.mean(shared)) / k, _DIGITS)
