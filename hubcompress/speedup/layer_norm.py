"""The LayerNorm of a narrowed residual stream. It is defined in the self-contained modeling file
that pruned checkpoints carry (so consumers load it without hubcompress); speedup uses that class."""

from __future__ import annotations

from ..remote_code.modeling_hubcompress import WidthPrunedLayerNorm

__all__ = ["WidthPrunedLayerNorm"]
