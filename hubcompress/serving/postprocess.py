"""Turn raw model outputs into what a task's user wants: class probabilities and labels.

Sentence embeddings are pooled by :class:`hubcompress.pooling.Pooling`, read from the served folder.
"""

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
