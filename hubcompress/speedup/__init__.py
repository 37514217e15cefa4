"""Speedup: masks in, physically smaller modules out; pruned checkpoints that reload.

Example:
    >>> from hubcompress.speedup import ModelSpeedup, register_replacer, register_mask_updater
    >>> from hubcompress.speedup import auto_set_dependency_group_ids  # NNI's auto_set_denpendency_group_ids
"""

from __future__ import annotations

from ..architectures import register_block_fixer
from . import attention_rules  # noqa: F401  (registers the rules of relative-position and fused attention)
from .coupling import register_mask_updater
from .dependency import auto_set_denpendency_group_ids, auto_set_dependency_group_ids
from .layer_norm import WidthPrunedLayerNorm
from .liveness import register_liveness_rule
from .model_speedup import ModelSpeedup, SpeedupReport
from .replacers import register_replacer

__all__ = [
    "ModelSpeedup",
    "SpeedupReport",
    "WidthPrunedLayerNorm",
    "auto_set_denpendency_group_ids",
    "auto_set_dependency_group_ids",
    "register_block_fixer",
    "register_liveness_rule",
    "register_mask_updater",
    "register_replacer",
]
