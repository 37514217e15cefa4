"""Granularity: how a target's metric is reduced to blocks, and how a block mask expands back.

A granularity resolves to a *kernel*, one block size per dim of the target, where -1 spans the
whole dim. ``out_channel`` keeps the layout's output dim (dim 0 for Linear/Conv, dim 1 for
ConvTranspose, Conv1D and Embedding), ``in_channel`` its input dim, ``per_channel`` the channel
dim of an activation: the last dim, or dim 1 of a channels-first one (``ChannelLayout.activation_dim``:
convolutions, BatchNorm, pooling, any 4+-dim tensor). NNI used dim 1 whatever the layout, which for a
transformer's ``[batch, seq, hidden]`` activation is the sequence; ours is the channel.

Example:
    >>> import torch
    >>> k = resolve_kernel([2, -1], (4, 3), is_activation=False, out_dim=0, in_dim=1)
    >>> block_reduce(torch.ones(4, 3), k)  # two blocks of 2 rows x 3 columns
    tensor([[6.],
            [6.]])
    >>> expand_mask(torch.tensor([[1.], [0.]]), k, (4, 3)).sum().item()
    6.0
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ...errors import ConfigListError


class GranularityError(ConfigListError):
    """A granularity does not fit a target's shape (callers add the config index and key)."""


def resolve_kernel(granularity: str | Sequence[int], shape: Sequence[int], *, is_activation: bool,
                   out_dim: int, in_dim: int, element_default: bool = False, channel_dim: int = -1) -> list[int]:
    """The block kernel for ``granularity`` on a target of ``shape``; ``channel_dim`` is the dim
    ``per_channel`` keeps on an activation."""
    ndim = len(shape)
    if granularity == "default":
        if element_default:
            return [1] * ndim
        granularity = "per_channel" if is_activation else "out_channel"
    if granularity == "per_channel":
        channel = channel_dim % max(ndim, 1)
        return [1 if d == channel else -1 for d in range(ndim)]
    if granularity in ("out_channel", "in_channel"):
        if is_activation:
            raise GranularityError(f"{granularity!r} is for parameters; activations use 'per_channel' or a kernel")
        if ndim == 1:
            if granularity == "in_channel":
                raise GranularityError("'in_channel' needs a parameter of 2 or more dims")
            return [1]
        dim = out_dim if granularity == "out_channel" else in_dim
        return [1 if d == dim else -1 for d in range(ndim)]
    kernel = list(granularity)
    if len(kernel) != ndim:
        raise GranularityError(f"block kernel {kernel} has {len(kernel)} dims, the target has {ndim} (shape {tuple(shape)})")
    for k, s in zip(kernel, shape):
        if k != -1 and s % k:
            raise GranularityError(f"block kernel {kernel} does not divide shape {tuple(shape)}")
    return kernel


def _sizes(kernel: Sequence[int], shape: Sequence[int]) -> list[int]:
    return [s if k == -1 else k for k, s in zip(kernel, shape)]


def reduced_shape(kernel: Sequence[int], shape: Sequence[int]) -> list[int]:
    return [s // b for s, b in zip(shape, _sizes(kernel, shape))]


def to_blocks(tensor: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    """View ``tensor`` as ``[number of blocks, elements per block]`` (blocks in row-major order)."""
    shape = list(tensor.shape)
    sizes = _sizes(kernel, shape)
    split: list[int] = []
    for s, b in zip(shape, sizes):
        split += [s // b, b]
    ndim = len(shape)
    order = list(range(0, 2 * ndim, 2)) + list(range(1, 2 * ndim, 2))
    blocks = tensor.reshape(split).permute(order)
    return blocks.reshape(math.prod(reduced_shape(kernel, shape)), math.prod(sizes))


def block_reduce(tensor: torch.Tensor, kernel: Sequence[int], op: str = "sum") -> torch.Tensor:
    """Reduce each block to one number: ``sum``, ``l1`` (sum of magnitudes), ``l2`` (sqrt of the
    sum of squares) or ``max``. The norms run fused, without a temporary the size of the target."""
    blocks = to_blocks(tensor, kernel)
    if op == "sum":
        value = blocks.sum(1)
    elif op == "l1":
        value = torch.linalg.vector_norm(blocks, ord=1, dim=1)
    elif op == "l2":
        value = torch.linalg.vector_norm(blocks, ord=2, dim=1)
    elif op == "max":
        value = blocks.amax(1)
    else:
        raise ValueError(f"unknown reduction {op!r}")
    return value.reshape(reduced_shape(kernel, tensor.shape))


def expand_mask(mask: torch.Tensor, kernel: Sequence[int], shape: Sequence[int] | None) -> torch.Tensor:
    """Expand a block mask to the target's ``shape``; for activations (``shape`` None) dims
    spanned by -1 stay size 1, so the mask broadcasts over batch and sequence. Dims spanned by
    -1 are expanded as views (no memory): a channel mask of a 768x3072 weight costs 3072 floats."""
    out = mask
    for dim, k in enumerate(kernel):
        if k == -1:
            if shape is not None:
                out = out.expand(*[shape[d] if d == dim else -1 for d in range(out.dim())])
        elif k > 1:
            out = out.repeat_interleave(k, dim=dim)
    return out
