"""Speedup: masks in, physically smaller modules out; pruned checkpoints that reload.

Example:
    >>> from hubcompress.speedup import ModelSpeedup, register_replacer, register_mask_updater
"""

from __future__ import annotations

from ..architectures import register_block_fixer
from .coupling import register_mask_updater
from .layer_norm import WidthPrunedLayerNorm
from .liveness import register_liveness_rule
from .model_speedup import ModelSpeedup, SpeedupReport
from .replacers import register_replacer

__all__ = [
    "ModelSpeedup",
    "SpeedupReport",
    "WidthPrunedLayerNorm",
    "register_block_fixer",
    "register_liveness_rule",
    "register_mask_updater",
    "register_replacer",
]
