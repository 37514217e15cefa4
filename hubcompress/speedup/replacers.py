"""One small replacer per module class: given which indices of each parameter dim to keep,
build the physically smaller module. Found by class name; ``register_replacer`` adds one.

A replacer receives ``keep = {param_name: [bool vector per dim]}`` and returns the new module.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import ReplacementError
from .layer_norm import WidthPrunedLayerNorm

Keep = dict[str, list[torch.Tensor]]
Replacer = Callable[[nn.Module, Keep], nn.Module]
REPLACERS: dict[str, Replacer] = {}


def register_replacer(*class_names: str) -> Callable[[Replacer], Replacer]:
    """Register ``fn(module, keep) -> new module`` for module classes (by ``__name__``).

    Example:
        >>> @register_replacer("MyGate")
        ... def _gate(module, keep):
        ...     return module  # build the smaller module here
        >>> "MyGate" in REPLACERS
        True
    """
    def deco(fn: Replacer) -> Replacer:
        for name in class_names:
            REPLACERS[name] = fn
        return fn
    return deco


def _idx(vector: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(vector, as_tuple=False).flatten()


def _take(tensor: torch.Tensor, *index: torch.Tensor | None) -> torch.Tensor:
    """``tensor`` with only the given indices along its first dims (None: the whole dim)."""
    for dim, idx in enumerate(index):
        if idx is not None and idx.numel() != tensor.shape[dim]:
            tensor = tensor.index_select(dim, idx)
    return tensor


def _new(cls: type[nn.Module], *args: object, **kwargs: object) -> nn.Module:
    # The weights are overwritten at once: skip the random initialisation (slow at BERT-base size).
    return nn.utils.skip_init(cls, *args, **kwargs)


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    p = next(old.parameters(), None)
    if p is None:
        p = next(old.buffers(), None)
    if p is not None:
        new.to(device=p.device, dtype=p.dtype if p.is_floating_point() else None)
    new.train(old.training)
    return new


def _set(new: nn.Module, name: str, old: nn.Module, tensor: torch.Tensor) -> None:
    """Give ``new`` the parameter ``name``: the selected slice itself when it is already a fresh
    tensor (no second copy), else a copy."""
    source = getattr(old, name)
    data = tensor.detach()
    if data.data_ptr() == source.data_ptr():
        data = data.clone()
    setattr(new, name, nn.Parameter(data, requires_grad=source.requires_grad))


@register_replacer("Linear")
def _linear(m: nn.Linear, keep: Keep) -> nn.Module:
    rows, cols = _idx(keep["weight"][0]), _idx(keep["weight"][1])
    new = _new(nn.Linear, len(cols), len(rows), bias=m.bias is not None, device="meta")
    _set(new, "weight", m, _take(m.weight, rows, cols))
    if m.bias is not None:
        _set(new, "bias", m, _take(m.bias, rows))
    new.train(m.training)
    return new


@register_replacer("Conv1D")
def _conv1d_hf(m: nn.Module, keep: Keep) -> nn.Module:
    from transformers.pytorch_utils import Conv1D

    ins, outs = _idx(keep["weight"][0]), _idx(keep["weight"][1])
    new = _like(Conv1D(len(outs), len(ins)), m)
    _copy(new.weight, _take(m.weight, ins, outs))
    _copy(new.bias, _take(m.bias, outs))
    return new


def _conv(m: nn.Module, keep: Keep, transposed: bool) -> nn.Module:
    # weight: [out, in/groups, *k], transposed [in, out/groups, *k]. Dim 0 lists every channel of
    # its side; dim 1 the positions within one group, the same in every kept group (coupling.py).
    w_keep = keep["weight"]
    full, positions = w_keep[0], w_keep[1]
    whole = full.reshape(m.groups, -1)
    kept_groups = whole.any(1)
    groups = int(kept_groups.sum())
    if m.groups != 1 and not bool((whole[kept_groups] == _first_kept(whole, kept_groups)).all()):
        raise ReplacementError(f"{type(m).__name__} with groups={m.groups}: the kept channels differ between groups; "
                               "please report this model with its masks.")
    n_full = int(full.sum())
    n_other = groups * int(positions.sum())
    ins, outs = (n_full, n_other) if transposed else (n_other, n_full)
    kwargs = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                  groups=max(groups, 1), bias=m.bias is not None, padding_mode=m.padding_mode)
    if transposed:
        kwargs["output_padding"] = m.output_padding
    new = _like(_new(type(m), ins, outs, **kwargs), m)
    _copy(new.weight, _take(m.weight, _idx(full), _idx(positions)))
    if m.bias is not None:
        out_keep = (kept_groups[:, None] & positions[None, :]).flatten() if transposed else full
        _copy(new.bias, _take(m.bias, _idx(out_keep)))
    return new


def _first_kept(whole: torch.Tensor, kept_groups: torch.Tensor) -> torch.Tensor:
    """The kept positions of the first kept group (every kept group keeps the same ones)."""
    rows = whole[kept_groups]
    return rows[:1] if len(rows) else rows


for _name in ("Conv1d", "Conv2d", "Conv3d"):
    register_replacer(_name)(lambda m, k: _conv(m, k, transposed=False))
for _name in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"):
    register_replacer(_name)(lambda m, k: _conv(m, k, transposed=True))


@register_replacer("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
def _batch_norm(m: nn.Module, keep: Keep) -> nn.Module:
    vector = next(v[0] for v in keep.values())
    for other in keep.values():
        vector = vector | other[0]
    idx = _idx(vector)
    new = _like(type(m)(len(idx), eps=m.eps, momentum=m.momentum, affine=m.affine,
                        track_running_stats=m.track_running_stats), m)
    for name in ("weight", "bias", "running_mean", "running_var"):
        if getattr(m, name, None) is not None:
            _copy(getattr(new, name), getattr(m, name)[idx])
    if m.track_running_stats:
        _copy(new.num_batches_tracked, m.num_batches_tracked)
    return new


@register_replacer("LayerNorm", "WidthPrunedLayerNorm")
def _layer_norm(m: nn.Module, keep: Keep) -> nn.Module:
    shape = tuple(m.normalized_shape)
    if len(shape) != 1:
        raise ReplacementError(f"LayerNorm over {shape}: only a LayerNorm over the last dim can be narrowed.")
    vector = keep.get("weight", keep.get("bias"))[0]
    idx = _idx(vector)
    # The removed channels were zero in the masked model but still counted in the mean and
    # variance: the narrow norm keeps counting them, so its outputs are the same numbers.
    full = getattr(m, "full_width", shape[0])
    new = _like(WidthPrunedLayerNorm(len(idx), full, eps=m.eps, elementwise_affine=m.weight is not None,
                                     bias=m.bias is not None), m)
    if m.weight is not None:
        _copy(new.weight, m.weight[idx])
    if m.bias is not None:
        _copy(new.bias, m.bias[idx])
    return new


@register_replacer("GroupNorm")
def _group_norm(m: nn.GroupNorm, keep: Keep) -> nn.Module:
    vector = keep["weight"][0]
    groups = vector.reshape(m.num_groups, -1)
    whole = groups.all(1) | ~groups.any(1)
    if not bool(whole.all()):
        raise ReplacementError("GroupNorm: the kept channels cut through groups; prune whole groups "
                               f"(granularity [{m.num_channels // m.num_groups}] on its weight).")
    idx = _idx(vector)
    new = _like(nn.GroupNorm(int(groups.all(1).sum()), len(idx), eps=m.eps, affine=m.affine), m)
    if m.affine:
        _copy(new.weight, m.weight[idx])
        _copy(new.bias, m.bias[idx])
    return new


@register_replacer("Embedding")
def _embedding(m: nn.Embedding, keep: Keep) -> nn.Module:
    rows, cols = _idx(keep["weight"][0]), _idx(keep["weight"][1])
    if len(rows) != m.num_embeddings:
        raise ReplacementError("Embedding rows (token ids) cannot be removed by speedup.")
    new = _like(_new(nn.Embedding, m.num_embeddings, len(cols), padding_idx=m.padding_idx, max_norm=m.max_norm,
                     norm_type=m.norm_type, scale_grad_by_freq=m.scale_grad_by_freq, sparse=m.sparse), m)
    _copy(new.weight, _take(m.weight, None, cols))
    return new
