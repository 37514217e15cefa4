"""``text-classification``: a sequence classifier's logits, accuracy and macro F1 against the labels,
agreement with the teacher's argmax.

Example:
    >>> import numpy as np
    >>> from hubcompress.pipeline.tasks import TASKS
    >>> rows = TASKS["text-classification"].rows({"logits": np.eye(2)}, {}, [0, 1], None, None)
    >>> [r.tolist() for r in rows]
    [[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import metrics
from .base import TaskSpec, labelled_loss, register_task, stacked


def classification_quality(rows: dict[str, Any], teacher: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Accuracy and macro F1 on the eval labels, and how often the argmax is the teacher's."""
    labels = np.asarray(ctx.data.eval.labels)
    pred = stacked(rows["eval"]).argmax(-1)
    return {"accuracy": metrics.accuracy(pred, labels), "f1_macro": metrics.macro_f1(pred, labels),
            "agreement_with_teacher": metrics.accuracy(pred, stacked(teacher["eval"]).argmax(-1))}


TEXT_CLASSIFICATION = register_task(TaskSpec(
    name="text-classification", auto_class="AutoModelForSequenceClassification", outputs=("logits",),
    row_name="logits", rows=lambda out, batch, index, data, pooling: list(out["logits"]),
    quality=classification_quality, primary_metric="accuracy", agreement="argmax",
    loss=labelled_loss, has_task_loss=True, needs_labels=True, distill_head="classifier",
    finetunes_teacher=True, against_teacher=("agreement_with_teacher",)))
