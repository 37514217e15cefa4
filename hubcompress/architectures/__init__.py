"""The architecture registry: one entry per ``model_type`` (see ``base.py``); importing this
package registers the built-in ones.

Example:
    >>> from hubcompress.architectures import ARCHITECTURES
    >>> sorted(ARCHITECTURES)  # doctest: +NORMALIZE_WHITESPACE
    ['albert', 'bert', 'camembert', 'deberta-v2', 'distilbert', 'electra', 'gpt2', 'modernbert', 'mpnet',
     'roberta', 'vit', 'xlm-roberta']
"""

from __future__ import annotations

# each module registers its entry
from . import albert, bert, deberta_v2, distilbert, gpt2, modernbert, mpnet, vit  # noqa: F401
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
