"""Turn raw model outputs into what a task's user wants: class probabilities or sentence embeddings."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed stably (the row maximum is subtracted first).

    Example:
        >>> import numpy as np
        >>> softmax(np.array([[0.0, 0.0], [1000.0, 0.0]])).round(3).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def mean_pool_normalized(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them: the mean of the token vectors under
    the attention mask, then L2-normalised (its ``Pooling(mean)`` + ``Normalize`` modules).

    Args:
        hidden: ``[rows, sequence, hidden]`` token vectors.
        attention_mask: ``[rows, sequence]``, 1 on real tokens and 0 on padding.

    Example:
        >>> import numpy as np
        >>> hidden = np.array([[[3.0, 4.0], [100.0, 100.0]]])
        >>> mean_pool_normalized(hidden, np.array([[1, 0]])).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    mask = attention_mask[..., None].astype(np.float32)
    summed = (hidden.astype(np.float32) * mask).sum(axis=1)
    # The same floors as sentence-transformers, so an all-padding row gives zeros rather than NaN.
    mean = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(mean, axis=-1, keepdims=True)
    return (mean / np.clip(norms, 1e-12, None)).astype(np.float32)


def classification_predictions(probabilities: np.ndarray, id2label: Mapping[int, str]) -> list[dict[str, object]]:
    """One ``{"label", "score", "scores"}`` dict per row: the top class and every class's probability.

    Example:
        >>> import numpy as np
        >>> classification_predictions(np.array([[0.25, 0.75]]), {0: "negative", 1: "positive"})
        [{'label': 'positive', 'score': 0.75, 'scores': {'negative': 0.25, 'positive': 0.75}}]
    """
    predictions: list[dict[str, object]] = []
    for row in probabilities:
        names = [id2label.get(index, f"LABEL_{index}") for index in range(len(row))]
        best = int(np.argmax(row))
        predictions.append(
            {"label": names[best], "score": float(row[best]), "scores": {n: float(p) for n, p in zip(names, row)}}
        )
    return predictions
