"""Distances between a student target and its teacher target, found by ``apply_method`` name.

Example:
    >>> import torch
    >>> s, t = torch.zeros(2, 3), torch.ones(2, 3)
    >>> float(DISTILL_LOSSES["mse"](s, t, 2.0))
    1.0
    >>> round(float(DISTILL_LOSSES["kl"](t, t, 2.0)), 6)
    0.0
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..config.keys import APPLY_METHODS

DistillLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (student, teacher, temperature)
DISTILL_LOSSES: dict[str, DistillLoss] = {}


def register_distill_loss(name: str) -> Callable[[DistillLoss], DistillLoss]:
    """Register ``fn(student, teacher, temperature) -> scalar`` as a distillation ``apply_method``."""
    def deco(fn: DistillLoss) -> DistillLoss:
        DISTILL_LOSSES[name] = fn
        if name not in APPLY_METHODS["distillation"]:
            APPLY_METHODS["distillation"] = (*APPLY_METHODS["distillation"], name)
        return fn
    return deco


@register_distill_loss("mse")
def _mse(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.mse_loss(student.float(), teacher.float())


@register_distill_loss("kl")
def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    # Softened distributions over the last dim (Hinton et al. 2015); T^2 keeps gradient scale.
    s = (student.float() / temperature).log_softmax(-1).reshape(-1, student.shape[-1])
    t = (teacher.float() / temperature).softmax(-1).reshape(-1, teacher.shape[-1])
    return F.kl_div(s, t, reduction="batchmean") * temperature**2


@register_distill_loss("kl_seq")
def _kl_seq(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    # Over the second-to-last dim (positions), per entry of the last: a span head's (batch, seq, 2) output
    # is a start and an end distribution over the sequence, not two classes per token.
    return _kl(student.transpose(-1, -2), teacher.transpose(-1, -2), temperature)
