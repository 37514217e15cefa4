"""From metrics to masks: threshold → dependency → global → ratio → align.

Every target that prunes (or follows a dependency group) becomes an *item*; items sharing a
``dependency_group_id`` form one *unit* with one combined metric and one shared mask; units
sharing a ``global_group_id`` are ranked jointly. Metrics are block-reduced already (one entry
per block of the target's granularity).

Fixes over NNI: members of a global group are ranked on normalised metrics (each unit's metric
divided by its mean, so a small or small-valued layer does not lose by scale alone), each
entry weighs as many elements as it covers, and ``max_sparse_ratio`` caps every member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import ConfigListError
from .granularity import expand_mask, reduced_shape
from .target_space import PruningTargetSpace

Masks = dict[str, dict[str, torch.Tensor]]


@dataclass
class Item:
    space: PruningTargetSpace
    kernel: list[int]
    shape: list[int] | None  # None for activations: masks stay broadcastable
    metric: torch.Tensor | None  # block-reduced
    block_elems: int

    @property
    def where(self) -> str:
        return f"{self.space.wrapper.module_name}.{self.space.name}"


@dataclass
class Unit:
    items: list[Item]
    metric: torch.Tensor  # flat
    folds: list[int]  # per item: how many copies of the unit mask its reduced metric holds
    entry_elems: int
    ratio: float | None = None
    threshold: float | None = None
    min_ratio: float | None = None
    max_ratio: float | None = None
    blocks: int | None = None
    global_id: Any = None
    mask: torch.Tensor | None = field(default=None)

    @property
    def where(self) -> str:
        return ", ".join(i.where for i in self.items)


def _normalised(metric: torch.Tensor) -> torch.Tensor:
    mean = metric.float().abs().mean()
    return metric.float() / mean if mean > 0 else metric.float()


def _agree(items: list[Item], key: str, group: Any) -> Any:
    values = {getattr(i.space, key) for i in items} - {None}
    if len(values) > 1:
        raise ConfigListError(
            f"dependency group {group!r} ({', '.join(i.where for i in items)}) has different {key} values "
            f"{sorted(values, key=str)}; members share one mask, so give them one value.",
            index=items[0].space.config_index, key=key)
    return values.pop() if values else None


def _build_units(items: list[Item]) -> list[Unit]:
    units: list[Unit] = []
    groups: dict[Any, list[Item]] = {}
    for item in items:
        gid = item.space.dependency_group_id
        if gid is None:
            if item.metric is None:
                raise ConfigListError(
                    f"{item.where} is an activation target and this pruner measures parameters only; use "
                    "TaylorPruner (gradients of activations), or put the target in a dependency_group_id "
                    "with parameters whose mask it should follow.",
                    index=item.space.config_index, key="target_names")
            flat = item.metric.flatten().float()
            imb = item.space.internal_metric_block
            if imb and flat.numel() % imb:
                raise ConfigListError(
                    f"{item.where}: internal_metric_block {imb} does not divide its {flat.numel()} prunable entries.",
                    index=item.space.config_index, key="internal_metric_block")
            units.append(Unit([item], flat, [1], item.block_elems, item.space.sparse_ratio,
                              item.space.sparse_threshold, item.space.min_sparse_ratio, item.space.max_sparse_ratio,
                              item.space.internal_metric_block, item.space.global_group_id))
        else:
            groups.setdefault(gid, []).append(item)
    for gid, members in groups.items():
        units.append(_dependency_unit(gid, members))
    return units


def _dependency_unit(gid: Any, members: list[Item]) -> Unit:
    """One unit for a dependency group: the members' normalised metrics summed, one shared mask.

    ``internal_metric_block`` means what NNI's dependency groups make of it: the shared metric is
    split into lcm(members' values) equal blocks, each pruned at the group's ratio (a grouped
    convolution keeps the same number of channels per group). A member whose metric is that many
    times *longer* than the others' is a fused projection instead (GPT-2's ``c_attn``: Q, K and
    V of the same heads side by side): its blocks are folded onto the shared metric.
    """
    measured = [m for m in members if m.metric is not None]
    if not measured:
        raise ConfigListError(
            f"dependency group {gid!r} has no member this pruner can measure ({', '.join(m.where for m in members)}); "
            "add a parameter target (a weight) to the group.", index=members[0].space.config_index,
            key="dependency_group_id")
    numels = {m.metric.numel() for m in measured}
    plain = [m for m in measured if not m.space.internal_metric_block]
    if len(numels) == 1:
        base = numels.pop()
    elif plain:
        base = plain[0].metric.numel()
    else:  # every member has a block count: the shortest metric is the shared one
        base = min(m.metric.numel() for m in measured)
    combined = torch.zeros(base)
    folds = []
    blocks = 1
    for m in members:
        if m.metric is None:  # an activation follower takes the group's mask as it is
            folds.append(1)
            continue
        numel = m.metric.numel()
        imb = m.space.internal_metric_block
        if numel == base:
            fold = 1
            blocks = math.lcm(blocks, imb or 1)
        elif imb and numel == imb * base:
            fold = imb
        else:
            shapes = {x.where: tuple(x.metric.shape) if x.metric is not None else "?" for x in members}
            raise ConfigListError(
                f"dependency group {gid!r}: metric shapes disagree after granularity reduction {shapes}; members "
                "must reduce to the same number of blocks (set granularity so they do, or internal_metric_block "
                "for a fused projection whose blocks repeat, like GPT-2's c_attn).",
                index=m.space.config_index, key="dependency_group_id")
        folds.append(fold)
        combined += _normalised(m.metric.flatten().float().reshape(fold, base).sum(0))
    if base % blocks:
        raise ConfigListError(
            f"dependency group {gid!r}: internal_metric_block values make {blocks} blocks (their lcm), which do not "
            f"divide the group's {base} prunable entries.", index=members[0].space.config_index,
            key="internal_metric_block")
    ratio = _agree(members, "sparse_ratio", gid)
    threshold = _agree(members, "sparse_threshold", gid)
    if ratio is None and threshold is None:
        raise ConfigListError(f"dependency group {gid!r} sets no sparse_ratio or sparse_threshold.",
                              index=members[0].space.config_index, key="dependency_group_id")
    mins = [m.space.min_sparse_ratio for m in members if m.space.min_sparse_ratio is not None]
    maxs = [m.space.max_sparse_ratio for m in members if m.space.max_sparse_ratio is not None]
    entry_elems = sum(m.block_elems * f for m, f in zip(members, folds) if m.shape is not None)
    return Unit(members, combined, folds, max(entry_elems, 1), ratio, threshold, max(mins) if mins else None,
                min(maxs) if maxs else None, blocks if blocks > 1 else None, _agree(members, "global_group_id", gid))


def _clamp(ratio: float, lo: float | None, hi: float | None) -> float:
    if lo is not None:
        ratio = max(ratio, lo)
    if hi is not None:
        ratio = min(ratio, hi)
    return ratio


def _ratio_mask(metric: torch.Tensor, ratio: float, blocks: int | None = None) -> torch.Tensor:
    rows = metric.reshape(blocks or 1, -1)
    mask = torch.ones_like(rows)
    k = int(round(ratio * rows.shape[1]))
    if k > 0:
        order = torch.argsort(rows, dim=1, stable=True)[:, :k]
        mask.scatter_(1, order, 0.0)
    return mask.flatten()


def _unit_masks(units: list[Unit]) -> None:
    global_groups: dict[Any, list[Unit]] = {}
    for unit in units:
        if unit.global_id is not None:
            global_groups.setdefault(unit.global_id, []).append(unit)
            continue
        if unit.threshold is not None:
            mask = (unit.metric >= unit.threshold).float()
            achieved = 1.0 - mask.mean().item()
            clamped = _clamp(achieved, unit.min_ratio, unit.max_ratio)
            if not math.isclose(clamped, achieved):
                mask = _ratio_mask(unit.metric, clamped, unit.blocks)
            unit.mask = mask
        else:
            unit.mask = _ratio_mask(unit.metric, _clamp(unit.ratio, unit.min_ratio, unit.max_ratio), unit.blocks)
    for gid, members in global_groups.items():
        _global_masks(gid, members)


def _global_masks(gid: Any, units: list[Unit]) -> None:
    first = units[0].items[0].space
    ratios = {u.ratio for u in units}
    if len(ratios) != 1 or None in ratios:
        raise ConfigListError(
            f"global group {gid!r} members need one shared sparse_ratio, got {sorted(ratios, key=str)}.",
            index=first.config_index, key="global_group_id")
    if any(u.blocks and u.blocks > 1 for u in units):
        raise ConfigListError(f"global group {gid!r}: internal_metric_block cannot be combined with a global group.",
                              index=first.config_index, key="internal_metric_block")
    ratio = ratios.pop()
    values = torch.cat([_normalised(u.metric) for u in units])
    owner = torch.cat([torch.full((u.metric.numel(),), i) for i, u in enumerate(units)])
    weight = torch.tensor([u.entry_elems for u in units], dtype=torch.float64)
    sizes = torch.tensor([u.metric.numel() for u in units], dtype=torch.float64) * weight
    pruned = torch.zeros(len(units), dtype=torch.float64)
    keep = torch.ones(values.numel())
    order = torch.argsort(values, stable=True)
    # Each member's minimum first, then the lowest entries until the group's ratio, honouring
    # each member's maximum (NNI ignored it here and could prune a layer entirely).
    for i, u in enumerate(units):
        if u.min_ratio:
            local = torch.nonzero(owner == i).flatten()
            k = int(round(u.min_ratio * local.numel()))
            chosen = local[torch.argsort(values[local], stable=True)[:k]]
            keep[chosen] = 0
            pruned[i] += k * weight[i]
    budget = ratio * sizes.sum().item() - pruned.sum().item()
    caps = torch.tensor([(u.max_ratio if u.max_ratio is not None else 1.0) for u in units],
                        dtype=torch.float64) * sizes
    for idx in order.tolist():
        if budget < 0.5 * weight.min().item():
            break
        i = int(owner[idx])
        if keep[idx] == 0 or pruned[i] + weight[i] > caps[i] + 1e-9 or weight[i] > budget + 0.5 * weight[i]:
            continue
        keep[idx] = 0
        pruned[i] += weight[i]
        budget -= weight[i].item()
    start = 0
    for u in units:
        u.mask = keep[start:start + u.metric.numel()]
        start += u.metric.numel()


def _member_mask(unit: Unit, item: Item, fold: int) -> torch.Tensor:
    flat = unit.mask.repeat(fold) if fold > 1 else unit.mask
    if item.metric is not None:
        reduced = flat.reshape(item.metric.shape)
    else:  # an activation follower: one entry per block of its last, non-spanned dims
        reduced = flat.reshape([1] * (len(item.kernel) - 1) + [-1])
    return expand_mask(reduced, item.kernel, item.shape)


def _aligned_mask(space: PruningTargetSpace, masks: Masks, channel_masks: dict) -> torch.Tensor | None:
    align = space.align
    source_module = align.get("module_name") or space.wrapper.module_name
    source = masks.get(source_module, {}).get(align["target_name"])
    if source is None:
        return None
    dims = [d % source.dim() for d in align["dims"]]
    others = [d for d in range(source.dim()) if d not in dims]
    reduced = channel_masks.get((source_module, align["target_name"]))
    if reduced is not None and reduced[0] == dims:  # the source's own block mask says it already
        kept = reduced[1]
    else:
        kept = (source.amax(dim=others) > 0).float() if others else source
    target = space.target
    if target is None:
        return kept
    if list(target.shape) == list(kept.shape):
        return kept
    if target.dim() == source.dim():
        view = [source.shape[d] if d in dims else 1 for d in range(source.dim())]
        return kept.reshape(view).expand(target.shape).contiguous()
    raise ConfigListError(
        f"{space.wrapper.module_name}.{space.name} (shape {tuple(target.shape)}) cannot follow "
        f"{source_module}.{align['target_name']} along dims {align['dims']} (shape {tuple(source.shape)}).",
        index=space.config_index, key="align")


def generate_masks(items: list[Item], aligned: list[PruningTargetSpace]) -> Masks:
    """Masks for ``items`` (targets with a metric, or followers of a dependency group), then for
    the targets that ``align`` to them."""
    units = _build_units(items)
    _unit_masks(units)
    masks: Masks = {}
    # (module, target) -> (the one dim kept whole, its 0/1 vector) for channel-granular masks,
    # so a bias aligned to its weight needs no pass over the full weight mask.
    channel_masks: dict[tuple[str, str], tuple[list[int], torch.Tensor]] = {}
    for unit in units:
        for item, fold in zip(unit.items, unit.folds):
            mask = _member_mask(unit, item, fold)
            key = (item.space.wrapper.module_name, item.space.name)
            masks.setdefault(key[0], {})[key[1]] = mask
            kept_dims = [d for d, k in enumerate(item.kernel) if k != -1]
            if item.shape is not None and len(kept_dims) == 1 and item.kernel[kept_dims[0]] == 1:
                channel_masks[key] = (kept_dims, unit.mask.repeat(fold) if fold > 1 else unit.mask)
    for space in aligned:
        mask = _aligned_mask(space, masks, channel_masks)
        if mask is not None:
            masks.setdefault(space.wrapper.module_name, {})[space.name] = mask
    return masks


def make_item(space: PruningTargetSpace, metric: torch.Tensor | None, kernel: list[int],
              shape: list[int] | None) -> Item:
    """An item; ``block_elems`` counts the elements one metric entry stands for."""
    if shape is not None:
        elems = math.prod(shape) // max(1, math.prod(reduced_shape(kernel, shape)))
    else:
        elems = 1
    return Item(space, kernel, shape, metric, elems)
