"""Keep compressors in step across processes (torch.distributed: DDP, torchrun, accelerate).

Every process trains on its own shard, so what a compressor *observes* differs per rank:
activation ranges, Taylor importance. These helpers combine the observations (all-reduce) and
make rank 0's masks the masks of every rank (broadcast), so masks and quantization scales agree;
``average_gradients`` is the data-parallel step, ``agree`` checks afterwards that the ranks agree.
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

import hashlib
from typing import Any, Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes: ``(0, 1)`` outside a group of several."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


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


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over every rank, in place (what DDP does after backward).

    Done by hand rather than through DDP so the compressors' wrappers, hooks and a distiller's
    teacher forward need no changes, and parameters no loss reaches (a pooler, an unused head) need
    no ``find_unused_parameters``. Every rank must hold the same parameters with gradients; those
    without one are skipped (the same ones on every rank: the ranks run the same code).
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    # One flat buffer per dtype: one collective per step instead of one per tensor.
    for dtype in sorted({g.dtype for g in grads}, key=str):
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= dist.get_world_size()
        offset = 0
        for g in group:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _digest(obj: Any, out: "hashlib._Hash") -> None:
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            out.update(str(key).encode())
            _digest(obj[key], out)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _digest(item, out)
    elif isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        out.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        out.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    else:
        out.update(repr(obj).encode())


def digest(obj: Any) -> str:
    """A hash of nested dicts / lists of tensors and numbers (their exact bits), e.g. masks or a
    quantizer's calibration: equal hashes mean equal contents.

    Example:
        >>> digest({"a": torch.ones(2)}) == digest({"a": torch.ones(2)}) != digest({"a": torch.zeros(2)})
        True
    """
    out = hashlib.sha256()
    _digest(obj, out)
    return out.hexdigest()


def agree(obj: Any) -> bool:
    """Whether every rank holds the same ``obj`` (compared by :func:`digest`); True in one process.
    A collective: every rank must call it."""
    if not is_distributed():
        return True
    mine = digest(obj)
    every: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return all(d == mine for d in every)


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Rank ``src``'s parameters and buffers in ``module`` on every rank, in place (what DDP does
    when it wraps a model). Ranks that each loaded a checkpoint can still differ: a head the
    checkpoint lacks is initialised at random, a file one node has and another lacks."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in module.state_dict(keep_vars=True).values():
            data = tensor.data if tensor.is_contiguous() else tensor.data.contiguous()
            dist.broadcast(data, src=src)
            if data is not tensor.data:
                tensor.data.copy_(data)
