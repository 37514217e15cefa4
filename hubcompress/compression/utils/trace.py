"""``trace``: NNI's ``nni.trace`` line ports unchanged."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def trace(cls_or_func: T) -> T:
    """NNI scripts wrap optimizer classes in ``nni.trace`` so NNI can rebuild the optimizer after
    wrapping the model. hubcompress keeps parameters where they are, so the user's optimizer
    stays valid and nothing needs rebuilding: ``trace`` returns its argument unchanged, and
    ``nni.trace(torch.optim.Adam)(...)`` ports by changing the import alone.

    Example:
        >>> import torch
        >>> trace(torch.optim.Adam) is torch.optim.Adam
        True
    """
    return cls_or_func
