"""Helpers NNI users import from ``nni.compression.utils``: evaluators, dependency groups found
by running the model, FLOPs and sparsity counters, and ``trace``.

Example:
    >>> from hubcompress.compression.utils import TorchEvaluator, auto_set_denpendency_group_ids  # NNI's names
"""

from __future__ import annotations

from ..evaluator import Evaluator, TorchEvaluator
from .counter import count_flops_params
from .dependency import auto_set_denpendency_group_ids, auto_set_dependency_group_ids, find_dependencies
from .mask_counter import compute_sparsity, compute_sparsity_compact2origin, compute_sparsity_mask2compact
from .trace import trace

__all__ = [
    "Evaluator",
    "LightningEvaluator",
    "TorchEvaluator",
    "TransformersEvaluator",
    "auto_set_denpendency_group_ids",
    "auto_set_dependency_group_ids",
    "compute_sparsity",
    "compute_sparsity_compact2origin",
    "compute_sparsity_mask2compact",
    "count_flops_params",
    "find_dependencies",
    "trace",
]


def __getattr__(name: str):  # transformers and lightning are heavy or optional: import on demand
    if name in ("TransformersEvaluator", "LightningEvaluator"):
        from .. import evaluator

        return getattr(evaluator, name)
    raise AttributeError(name)
