"""Keep compressors in step across processes (torch.distributed: DDP, torchrun, accelerate).

Every process trains on its own shard, so what a compressor *observes* differs per rank:
activation ranges, Taylor importance. These helpers combine the observations (all-reduce) and
make rank 0's masks the masks of every rank (broadcast), so masks and quantization scales agree.
Each is a no-op unless a process group of more than one process is initialised.

Example:
    >>> import torch
    >>> is_distributed()
    False
    >>> lo, hi = all_reduce_min_max(torch.tensor(-1.0), torch.tensor(2.0))
    >>> float(lo), float(hi)
    (-1.0, 2.0)
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_min_max(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The element-wise min of ``lo`` and max of ``hi`` over every rank."""
    if not is_distributed():
        return lo, hi
    lo, hi = lo.detach().clone(), hi.detach().clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return lo, hi


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``tensor`` over every rank (a new tensor)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_reduce_sum_(tensors: Iterable[torch.Tensor]) -> None:
    """Sum each tensor over every rank, in place. Every rank must pass the same tensors in the
    same order (collectives pair up by call order)."""
    if not is_distributed():
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def _compact(mask: torch.Tensor) -> torch.Tensor:
    # Channel masks are often expand()ed views (stride 0): send one copy of the repeated dims.
    index = tuple(slice(0, 1) if stride == 0 and size > 1 else slice(None)
                  for stride, size in zip(mask.stride(), mask.shape))
    return mask[index]


def broadcast_masks(masks: dict[str, dict[str, torch.Tensor]], src: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Rank ``src``'s masks on every rank (same dict structure on every rank is required)."""
    if not is_distributed():
        return masks
    out: dict[str, dict[str, torch.Tensor]] = {}
    for module_name in sorted(masks):
        for target_name in sorted(masks[module_name]):
            mask = masks[module_name][target_name]
            compact = _compact(mask).contiguous().float()
            dist.broadcast(compact, src=src)
            out.setdefault(module_name, {})[target_name] = compact.expand(mask.shape).to(mask.dtype)
    return out
