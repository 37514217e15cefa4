"""Distillers with NNI 3.0's names: layerwise distillation against a teacher, by default a
frozen copy of the original model.

Example:
    >>> from hubcompress.compression.distillation import DISTILLERS, DISTILL_LOSSES
    >>> sorted(DISTILLERS), sorted(DISTILL_LOSSES)
    (['adaptive1d_layerwise', 'dynamic_layerwise'], ['cosine', 'kl', 'kl_seq', 'mse', 'relational'])
"""

from __future__ import annotations

from .distillers import (
    DISTILLERS,
    Adaptive1dLayerwiseDistiller,
    Distiller,
    DynamicLayerwiseDistiller,
    register_distiller,
)
from .embedding_losses import similarity_matrix
from .losses import DISTILL_LOSSES, register_distill_loss
from .target_space import DistillationTargetSpace, default_teacher_predict, frozen_copy

__all__ = [
    "DISTILLERS",
    "DISTILL_LOSSES",
    "Adaptive1dLayerwiseDistiller",
    "DistillationTargetSpace",
    "Distiller",
    "DynamicLayerwiseDistiller",
    "default_teacher_predict",
    "frozen_copy",
    "register_distill_loss",
    "register_distiller",
    "similarity_matrix",
]
