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
