"""Compression: NNI 3.0-style config lists, shared module wrappers, pruners and evaluators.

Example:
    >>> from hubcompress.compression import L1NormPruner, TorchEvaluator  # NNI names
"""

from __future__ import annotations

from .config import HubcompressDeprecationWarning, PruningSetting
from .evaluator import Evaluator, TorchEvaluator
from .pruning import (
    AGPPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LevelPruner,
    LinearPruner,
    MovementPruner,
    SlimPruner,
    TaylorPruner,
    sparsity_report,
    transformer_config_list,
)
from .utils import trace

__all__ = [
    "AGPPruner",
    "Evaluator",
    "FPGMPruner",
    "HubcompressDeprecationWarning",
    "L1NormPruner",
    "L2NormPruner",
    "LevelPruner",
    "LinearPruner",
    "MovementPruner",
    "PruningSetting",
    "SlimPruner",
    "TaylorPruner",
    "TorchEvaluator",
    "TransformersEvaluator",
    "sparsity_report",
    "trace",
    "transformer_config_list",
]


def __getattr__(name: str):
    if name == "TransformersEvaluator":
        from .evaluator.transformers_evaluator import TransformersEvaluator

        return TransformersEvaluator
    raise AttributeError(name)
