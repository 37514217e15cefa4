"""``feature-extraction``: sentence embeddings pooled as the base folder's sentence-transformers
modules say; fidelity to the teacher (cosine, and on texts outside the distillation data the
Spearman of pairwise similarities and top-10 neighbour overlap) and, with labels, an MTEB-style
linear probe.

Example:
    >>> import numpy as np
    >>> from hubcompress.pooling import Pooling
    >>> from hubcompress.pipeline.tasks import TASKS
    >>> out = {"last_hidden_state": np.array([[[3.0, 4.0], [1.0, 0.0]]])}
    >>> batch = {"attention_mask": np.array([[1, 0]])}
    >>> TASKS["feature-extraction"].rows(out, batch, [0], None, Pooling(("cls",), normalize=True))[0].astype(float).round(3).tolist()
    [0.6, 0.8]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...pooling import Pooling
from .. import metrics
from .base import TaskSpec, forward_only, register_task, stacked

TOP_K = 10  # neighbours compared per text: a search result page
FIDELITY_METRICS = ("similarity_spearman", f"top{TOP_K}_overlap")  # measured on the fidelity texts


def _pooling(pooling: Pooling | None) -> Pooling:
    if pooling is None:
        raise ValueError("feature-extraction rows pool token vectors: pass the base folder's Pooling "
                         "(RunContext.pooling, or hubcompress.pooling.Pooling.from_folder)")
    return pooling


def pooled_rows(out: Any, batch: Any, index: Any, data: Any, pooling: Pooling | None) -> list[np.ndarray]:
    return list(_pooling(pooling)(out["last_hidden_state"], np.asarray(batch["attention_mask"])))


def embedding_quality(rows: dict[str, Any], teacher: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Cosine to the teacher's embeddings; the probe when the train split has labels; similarity
    search agreement on the fidelity texts."""
    out: dict[str, Any] = {"cosine_to_teacher": metrics.cosine_fidelity(stacked(rows["eval"]), stacked(teacher["eval"]))}
    if "train" in rows:
        out["probe_accuracy"] = metrics.probe_accuracy(stacked(rows["train"]), np.asarray(ctx.data.train.labels),
                                                       stacked(rows["eval"]), np.asarray(ctx.data.eval.labels),
                                                       seed=ctx.recipe.training.seed)
    if "fidelity" in rows:
        student, reference = stacked(rows["fidelity"]), stacked(teacher["fidelity"])
        out["similarity_spearman"] = metrics.similarity_spearman(student, reference)
        out[f"top{TOP_K}_overlap"] = metrics.topk_overlap(student, reference, k=TOP_K)
    return out


FEATURE_EXTRACTION = register_task(TaskSpec(
    name="feature-extraction", auto_class="AutoModel", outputs=("last_hidden_state",), row_name="sentence_embedding",
    rows=pooled_rows, quality=embedding_quality, primary_metric="probe_accuracy", agreement="cosine",
    loss=forward_only, has_task_loss=False, needs_labels=False, distill_head=None, pooled=True,
    against_teacher=("cosine_to_teacher", *FIDELITY_METRICS)))
