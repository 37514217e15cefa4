"""Metrics on arrays small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hubcompress.pipeline.metrics import (
    accuracy,
    cosine_fidelity,
    macro_f1,
    parity,
    probe_accuracy,
    similarity_spearman,
    topk_overlap,
)


def test_accuracy_and_macro_f1():
    pred, gold = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    # Per class: F1(0) = 2*.5*.5/1 = .5, F1(1) = 2*1*.5/1.5 = 2/3, F1(2) = 2*(2/3)*1/(5/3) = .8
    assert macro_f1(pred, gold) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        accuracy(pred, gold[:3])


def test_cosine_fidelity_guards_zero_vectors():
    student = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    teacher = np.array([[0.0, 2.0], [0.0, 0.0], [1.0, 0.0], [6.0, 8.0]])
    fid = cosine_fidelity(student, teacher)
    # Rows: orthogonal 0, both zero 1, one zero 0, same direction 1.
    assert fid == {"mean": 0.5, "min": 0.0, "p05": 0.0}
    assert cosine_fidelity(teacher, teacher)["min"] == 1.0
    tokens = np.ones((2, 3, 4))
    assert cosine_fidelity(tokens, 2 * tokens) == {"mean": 1.0, "min": 1.0, "p05": 1.0}


def test_probe_separates_separable_data_and_ignores_scale():
    rng = np.random.default_rng(0)
    centers = np.array([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    y = np.repeat(np.arange(3), 30)
    x = centers[y] + rng.normal(scale=0.3, size=(90, 4))
    train, test = np.arange(90) % 3 != 0, np.arange(90) % 3 == 0
    assert probe_accuracy(x[train], y[train], x[test], y[test]) == 1.0
    # Normalized features: shrinking every embedding (as a compressed model may) changes nothing.
    assert probe_accuracy(0.01 * x[train], y[train], 0.01 * x[test], y[test]) == 1.0


def test_parity_is_exact():
    ref = {"logits": np.array([[0.0, 1.0], [2.0, 1.0], [0.5, 0.0]]), "emb": np.array([[1.0, 0.0], [0.0, 1.0]]),
           "only_ref": np.zeros(3)}
    cand = {"logits": np.array([[0.0, 1.5], [2.0, 2.5], [0.5, 0.0]]), "emb": np.array([[1.0, 0.0], [0.0, 1.0]])}
    out = parity(ref, cand, argmax_output="logits", cosine_output="emb")
    assert out == {"logits": {"max_abs_diff": 1.5, "mean_abs_diff": 2.0 / 6}, "emb": {"max_abs_diff": 0.0,
                   "mean_abs_diff": 0.0}, "argmax_agreement": 2 / 3,
                   "cosine": {"mean": 1.0, "min": 1.0, "p05": 1.0}}


def test_parity_errors_name_the_output():
    with pytest.raises(ValueError, match=r"output 'logits': shapes differ, \(2, 2\) vs \(2, 3\)"):
        parity({"logits": np.zeros((2, 2))}, {"logits": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="no output in common"):
        parity({"a": np.zeros(2)}, {"b": np.zeros(2)})
    with pytest.raises(ValueError, match="cosine: output 'emb' is not in both"):
        parity({"a": np.zeros(2)}, {"a": np.zeros(2)}, cosine_output="emb")


def at(*degrees: float) -> np.ndarray:
    """Unit rows at these angles: the cosine of two rows falls as their angles part."""
    return np.array([[np.cos(np.radians(d)), np.sin(np.radians(d))] for d in degrees])


def test_similarity_spearman_by_hand():
    teacher = at(0, 10, 30, 70)  # pair angles 01:10 12:20 02:30 23:40 13:60 03:70
    # Other similarity values in the same order (pair angles 10, 15, 25, 45, 60, 70): Spearman sees ranks only.
    assert similarity_spearman(at(0, 10, 25, 70), teacher) == 1.0
    # Pair angles 01:10 23:25 12:35 02:45 13:60 03:70: ranks differ by 0, 1, 1, 2 -> 1 - 6 * 6 / (6 * 35)
    assert similarity_spearman(at(0, 10, 45, 70), teacher) == pytest.approx(1 - 36 / 210, abs=1e-5)
    # Row norms and the width do not count.
    assert similarity_spearman(np.hstack([3 * teacher, np.zeros((4, 3))]), teacher) == 1.0


def test_similarity_spearman_of_a_permutation_is_low():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(60, 16))
    shuffled = teacher[rng.permutation(60)]  # the right embeddings, given to the wrong texts
    assert abs(similarity_spearman(shuffled, teacher)) < 0.15
    assert topk_overlap(shuffled, teacher) < 0.3
    noisy = teacher + 0.1 * rng.normal(size=teacher.shape)
    assert similarity_spearman(noisy, teacher) > 0.95 and topk_overlap(noisy, teacher) > 0.7


def test_topk_overlap_by_hand():
    teacher, student = at(0, 10, 30, 70), at(0, 10, 45, 70)
    # k=1: nearest neighbours teacher 1, 0, 1, 2; student 1, 0, 3, 2.
    assert topk_overlap(student, teacher, k=1) == 0.75
    # k=2: teacher {1,2} {0,2} {0,1} {1,2}; student {1,2} {0,2} {1,3} {1,2}: 2 + 2 + 1 + 2 of 8.
    assert topk_overlap(student, teacher, k=2) == 7 / 8
    assert topk_overlap(teacher, teacher, k=10) == 1.0  # k capped at 3 neighbours


def test_fidelity_metrics_reject_what_they_cannot_rank():
    with pytest.raises(ValueError, match="at least 3 texts"):
        similarity_spearman(at(0, 10), at(0, 10))
    with pytest.raises(ValueError, match="same number of texts"):
        topk_overlap(at(0, 10, 20), at(0, 10))
    assert similarity_spearman(np.ones((4, 2)), at(0, 10, 30, 70)) == 0.0  # all pairs alike: no ranking
