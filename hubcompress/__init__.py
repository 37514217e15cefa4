"""hubcompress: take a pretrained model from a hub, compress it, shrink it, validate it, export
it and publish it.

Example:
    >>> import hubcompress
    >>> hubcompress.__version__
    '0.1.0'
"""

from __future__ import annotations

from .checkpoint import from_pretrained, save_pretrained

__version__ = "0.1.0"
__all__ = ["from_pretrained", "save_pretrained", "__version__"]
