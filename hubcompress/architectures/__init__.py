"""The architecture registry: one entry per ``model_type`` (see ``base.py``); importing this
package registers the built-in ones.

Example:
    >>> from hubcompress.architectures import ARCHITECTURES
    >>> sorted(ARCHITECTURES)[:3]
    ['bert', 'camembert', 'distilbert']
"""

from __future__ import annotations

from . import bert, distilbert, gpt2, vit  # noqa: F401  (each registers its entry)
from .base import (
    ARCHITECTURES,
    BLOCK_FIXERS,
    Architecture,
    BlockLayout,
    ConfigNames,
    ModelLayout,
    architecture_for,
    layer_widths,
    model_layout,
    out_width,
    register_architecture,
    register_block_fixer,
    register_layout,
)

__all__ = [
    "ARCHITECTURES",
    "BLOCK_FIXERS",
    "Architecture",
    "BlockLayout",
    "ConfigNames",
    "ModelLayout",
    "architecture_for",
    "layer_widths",
    "model_layout",
    "out_width",
    "register_architecture",
    "register_block_fixer",
    "register_layout",
]
