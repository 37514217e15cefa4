"""``distillation.embedding_loss``: losses between the student's and the teacher's sentence embeddings,
pooled as the model folder's sentence-transformers modules say, added to the distiller's layerwise
losses in the compress stage's one training loop.

They are the feature-extraction task's own loss (what the training step returns, which the
distiller keeps with ``origin_loss_lambda`` 1), and the distiller keeps NNI's API: this object is
its ``teacher_predict`` (NNI's argument), so the teacher runs once per step, in the training step,
and that forward feeds both the embeddings here and the layerwise targets (the distiller's hooks).

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertModel
    >>> from hubcompress.pooling import Pooling
    >>> from hubcompress.recipe import EmbeddingLoss
    >>> model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                              intermediate_size=32, vocab_size=20)).eval()
    >>> losses = EmbeddingDistillation(EmbeddingLoss(cosine=1.0, relational=1.0), Pooling(), model)
    >>> batch = {"input_ids": torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]),
    ...          "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    >>> loss = losses.training_step(batch, model)  # the student is the teacher
    >>> abs(round(float(loss.detach()), 6)), sorted(losses.last)
    (0.0, ['cosine', 'relational'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..compression.distillation import DISTILL_LOSSES, default_teacher_predict
from ..errors import CompressionError
from ..pooling import Pooling
from ..recipe import EmbeddingLoss


class EmbeddingDistillation:
    """:meth:`training_step` runs the student and (through :meth:`teacher_predict`) the teacher on a
    batch, pools both, and returns ``Σ weight · loss(student, teacher)`` over the losses with a weight
    above 0."""

    def __init__(self, weights: EmbeddingLoss, pooling: Pooling, teacher: nn.Module):
        self.weights = {name: float(w) for name, w in weights.model_dump().items() if w}
        unknown = sorted(set(self.weights) - set(DISTILL_LOSSES))
        if unknown:
            raise CompressionError(f"distillation.embedding_loss: no loss named {unknown}; known: {sorted(DISTILL_LOSSES)}")
        self.pooling = pooling
        self.teacher = teacher
        self.last: dict[str, float] = {}  # each weighted term of the last step, for the report
        self._batch: Any = None
        self._teacher_out: Any = None
        self._teacher_rows: torch.Tensor | None = None

    @staticmethod
    def _mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch.get("attention_mask", torch.ones_like(batch["input_ids"]))

    def training_step(self, batch: Mapping[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
        """The task loss of an embedding student: the weighted losses between its pooled embeddings and
        the teacher's on ``batch``."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        student = self.pooling(model(**inputs).last_hidden_state, self._mask(batch))
        self.teacher_predict(batch, self.teacher)
        total = student.sum() * 0.0
        for name, weight in self.weights.items():
            term = weight * DISTILL_LOSSES[name](student, self._teacher_rows.to(student.dtype), 1.0)
            self.last[name] = float(term.detach())
            total = total + term
        return total

    def teacher_predict(self, batch: Any, teacher: nn.Module) -> Any:
        """The teacher's forward on this batch (once per batch: the distiller's call, after the training
        step's, returns the first output; the layerwise targets were recorded during that forward)."""
        if batch is not self._batch:
            with torch.no_grad():
                self._teacher_out = default_teacher_predict(batch, teacher)
                self._teacher_rows = self.pooling(self._teacher_out.last_hidden_state, self._mask(batch)).detach()
            self._batch = batch
        return self._teacher_out


def from_recipe(recipe: Any, pooling: Pooling | None, teacher: nn.Module | None) -> EmbeddingDistillation | None:
    """The recipe's ``distillation.embedding_loss`` (None when it sets no weight above 0)."""
    weights = recipe.distillation.embedding_loss if recipe.distillation else None
    if weights is None or not any(weights.model_dump().values()):
        return None
    if pooling is None or teacher is None:
        raise CompressionError("distillation.embedding_loss needs the teacher and the model folder's pooling "
                               "(compress_model(..., pooling=Pooling.from_folder(folder)))")
    return EmbeddingDistillation(weights, pooling, teacher)
