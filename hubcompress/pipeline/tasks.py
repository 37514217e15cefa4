"""What differs between tasks, in one registry: the model class, the output rows the metrics
read (pooled embeddings or logits), the task loss, and the card's pipeline tag.

The rows functions take the base model folder's :class:`~hubcompress.pooling.Pooling` (``None``
for a task whose ``pooled`` is False), so one registry entry serves every pooling a
sentence-transformers folder declares.

Example:
    >>> import numpy as np
    >>> from hubcompress.pooling import Pooling
    >>> TASKS["text-classification"].auto_class, TASKS["feature-extraction"].onnx_output
    ('AutoModelForSequenceClassification', 'last_hidden_state')
    >>> hidden, mask = np.array([[[3.0, 4.0], [1.0, 0.0]]]), np.array([[1, 0]])
    >>> TASKS["feature-extraction"].rows_np(hidden, mask, Pooling(("cls",), normalize=True)).tolist()
    [[0.6000000238418579, 0.800000011920929]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..pooling import Pooling


def _pooling(pooling: Pooling | None) -> Pooling:
    if pooling is None:
        raise ValueError("feature-extraction rows pool token vectors: pass the base folder's Pooling "
                         "(RunContext.pooling, or hubcompress.pooling.Pooling.from_folder)")
    return pooling


def _forward_only(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    # No labels to learn from: the forward feeds the distillers' hooks, whose losses are the whole objective.
    model(**batch)
    return torch.zeros((), device=batch["input_ids"].device, requires_grad=True)


def _labelled_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


@dataclass(frozen=True)
class TaskSpec:
    name: str
    auto_class: str  # the transformers Auto class that loads the model
    onnx_output: str  # the exported output the metrics read
    row_name: str  # what one row of the metrics is called in the report
    # (model outputs, attention mask, pooling) -> one row per text
    rows: Callable[[Any, torch.Tensor, Pooling | None], torch.Tensor]
    rows_np: Callable[[np.ndarray, np.ndarray, Pooling | None], np.ndarray]  # the same on an ONNX output
    loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    has_task_loss: bool  # False: training needs a distiller
    needs_labels: bool
    distill_head: str | None  # module whose output is distilled with KL besides the layers
    pooled: bool = False  # rows pool token vectors, so they need the folder's Pooling


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    TASKS[spec.name] = spec
    return spec


register_task(TaskSpec(
    name="feature-extraction", auto_class="AutoModel", onnx_output="last_hidden_state", row_name="sentence_embedding",
    rows=lambda out, mask, pooling: _pooling(pooling)(out.last_hidden_state, mask),
    rows_np=lambda hidden, mask, pooling: _pooling(pooling)(hidden, mask),
    loss=_forward_only, has_task_loss=False, needs_labels=False, distill_head=None, pooled=True))

register_task(TaskSpec(
    name="text-classification", auto_class="AutoModelForSequenceClassification", onnx_output="logits", row_name="logits",
    rows=lambda out, mask, pooling: out.logits, rows_np=lambda logits, mask, pooling: logits,
    loss=_labelled_loss, has_task_loss=True, needs_labels=True, distill_head="classifier"))
