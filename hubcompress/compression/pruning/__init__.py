"""Pruners with NNI 3.0's names and call shapes.

Example:
    >>> from torch import nn
    >>> from hubcompress.compression.pruning import L1NormPruner
    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> pruner = L1NormPruner(net, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    >>> _, masks = pruner.compress()
    >>> pruner.unwrap_model()
    >>> float(1 - masks["0"]["weight"].mean())
    0.5
"""

from __future__ import annotations

from .base import Pruner, sparsity_report
from .basic_pruners import FPGMPruner, L1NormPruner, L2NormPruner, LevelPruner
from .scheduled_pruners import AGPPruner, LinearPruner
from .target_space import PruningTargetSpace, register_apply_method
from .training_pruners import MovementPruner, SlimPruner, TaylorPruner
from ...architectures import ModelLayout, model_layout, register_layout
from .transformer_groups import transformer_config_list

__all__ = [
    "AGPPruner",
    "FPGMPruner",
    "L1NormPruner",
    "L2NormPruner",
    "LevelPruner",
    "LinearPruner",
    "ModelLayout",
    "MovementPruner",
    "Pruner",
    "PruningTargetSpace",
    "SlimPruner",
    "TaylorPruner",
    "model_layout",
    "register_apply_method",
    "register_layout",
    "sparsity_report",
    "transformer_config_list",
]
