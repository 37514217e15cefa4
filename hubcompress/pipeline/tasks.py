"""What differs between tasks, in one registry: the model class, the output rows the metrics
read (pooled embeddings or logits), the task loss, and the card's pipeline tag.

Example:
    >>> TASKS["text-classification"].auto_class, TASKS["feature-extraction"].onnx_output
    ('AutoModelForSequenceClassification', 'last_hidden_state')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import mean_pool


def mean_pool_torch(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers' mean pooling: the average of the token vectors that are not padding."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


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
    rows: Callable[[Any, torch.Tensor], torch.Tensor]  # (model outputs, attention mask) -> one row per text
    rows_np: Callable[[np.ndarray, np.ndarray], np.ndarray]  # the same on an ONNX output
    loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    has_task_loss: bool  # False: training needs a distiller
    needs_labels: bool
    distill_head: str | None  # module whose output is distilled with KL besides the layers


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    TASKS[spec.name] = spec
    return spec


register_task(TaskSpec(
    name="feature-extraction", auto_class="AutoModel", onnx_output="last_hidden_state", row_name="sentence_embedding",
    rows=lambda out, mask: mean_pool_torch(out.last_hidden_state, mask),
    rows_np=mean_pool, loss=_forward_only, has_task_loss=False, needs_labels=False, distill_head=None))

register_task(TaskSpec(
    name="text-classification", auto_class="AutoModelForSequenceClassification", onnx_output="logits", row_name="logits",
    rows=lambda out, mask: out.logits, rows_np=lambda logits, mask: logits,
    loss=_labelled_loss, has_task_loss=True, needs_labels=True, distill_head="classifier"))
