"""The numeric precision a run trains and evaluates in (``training.dtype``), whatever the checkpoint stores.

Many hub checkpoints store float16 or bfloat16 weights, and transformers 5 loads them as stored.
On a CPU that is many times slower than float32 (a one-epoch classifier took over 25 minutes
instead of 5) and half-precision weights lose small optimizer updates. So weights are always
float32; ``bfloat16`` / ``float16`` ask for mixed precision (``torch.autocast``: half-precision
matmuls over float32 weights), which pays on GPUs. Evaluation and export stay in float32.

Example:
    >>> import torch
    >>> p = resolve_precision("auto", torch.device("cpu"), stored="float16")
    >>> p.to_dict()
    {'stored': 'float16', 'weights': 'float32', 'autocast': None}
    >>> resolve_precision("bfloat16", torch.device("cpu"), stored=None).autocast
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager

import torch

logger = logging.getLogger(__name__)

# training.dtype -> the autocast dtype (None: plain float32). auto is float32 on every device: mixed
# precision changes the numbers a run produces, so it is something a recipe asks for.
AUTOCAST: dict[str, torch.dtype | None] = {"auto": None, "float32": None, "bfloat16": torch.bfloat16,
                                           "float16": torch.float16}
WEIGHTS = torch.float32  # what the weights are loaded, trained and exported in


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """``torch.float16`` -> ``"float16"``."""
    return None if dtype is None else str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Precision:
    """What a run computes in: the checkpoint's stored dtype (None: not known), the weights' dtype,
    and the autocast dtype of the training loops (None: no autocast)."""

    stored: str | None = None
    weights: torch.dtype = WEIGHTS
    autocast: torch.dtype | None = None

    def autocast_context(self, device: torch.device) -> ContextManager[None]:
        """``torch.autocast`` in this precision on ``device``'s type, or a no-op."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)

    def to_dict(self) -> dict[str, str | None]:
        """report.json's ``dtype`` entry (the runner adds what the output folder's weights are stored in)."""
        return {"stored": self.stored, "weights": dtype_name(self.weights), "autocast": dtype_name(self.autocast)}


def resolve_precision(setting: str, device: torch.device, stored: str | None) -> Precision:
    """The precision ``training.dtype`` (auto / float32 / bfloat16 / float16) asks for on ``device``.

    Raises:
        KeyError: ``setting`` is not one of :data:`AUTOCAST` (the recipe schema rules that out).
    """
    autocast = AUTOCAST[setting]
    if autocast is torch.float16 and device.type == "cpu":
        # CPU autocast takes float16 too, but it is slower than float32 there; say so rather than surprise.
        logger.warning("training.dtype float16 on a CPU runs slower than float32; "
                                            "bfloat16 or auto are the CPU's choices")
    return Precision(stored=stored, weights=WEIGHTS, autocast=autocast)
