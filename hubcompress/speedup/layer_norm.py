"""A LayerNorm over the kept channels of a narrowed residual stream that still normalises as
the full-width one did: the removed channels were zeros, so they add nothing to the sums but
still count in the mean and the variance."""

from __future__ import annotations

import torch
from torch import nn


class WidthPrunedLayerNorm(nn.Module):
    """LayerNorm over ``width`` kept channels of a stream that was ``full_width`` wide.

    Example:
        >>> import torch
        >>> full = nn.LayerNorm(4)
        >>> x = torch.tensor([[1.0, 2.0, 0.0, 3.0]])  # channel 2 is pruned (zero)
        >>> narrow = WidthPrunedLayerNorm(3, 4)
        >>> torch.allclose(narrow(x[:, [0, 1, 3]]), full(x)[:, [0, 1, 3]], atol=1e-6)
        True
    """

    def __init__(self, width: int, full_width: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        super().__init__()
        self.normalized_shape = (width,)
        self.full_width = full_width
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(width)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.full_width == self.normalized_shape[0]:
            return nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        mean = x.sum(-1, keepdim=True) / self.full_width
        centred = x - mean
        missing = self.full_width - x.shape[-1]
        var = (centred.pow(2).sum(-1, keepdim=True) + missing * mean.pow(2)) / self.full_width
        out = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]} of {self.full_width}, eps={self.eps}"
