"""How much of a model's weights a pruning removed: NNI's ``compute_sparsity*`` helpers.

Each returns one dict per config of the config list: a copy of the config with
``total_sparsity``, the fraction of the selected modules' weight elements that is gone (NNI's
key, kept so scripts that read it port unchanged).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..config.keys import SELECTION_KEYS
from ..config.selection import compressible_modules, select_modules

Masks = dict[str, dict[str, torch.Tensor]]


def _weights(model: nn.Module, index: int, config: dict[str, Any]) -> dict[str, int]:
    modules = compressible_modules(model)
    out = {}
    for name in select_modules(index, config, modules):
        weight = getattr(modules[name], "weight", None)
        if isinstance(weight, torch.Tensor):
            out[name] = weight.numel()
    return out


def _configs(config_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The selection part of each config (NNI 2.x ``op_partial_names`` read as patterns); the
    other keys do not matter here, and the results copy the configs as given."""
    out = []
    for config in config_list:
        selection = {k: v for k, v in config.items() if k in SELECTION_KEYS}
        if config.get("op_partial_names"):
            selection["op_names_re"] = list(selection.get("op_names_re", [])) + [
                f".*{p}" for p in config["op_partial_names"]]
        out.append(selection)
    return out


def _with_sparsity(config: dict[str, Any], left: int, total: int) -> dict[str, Any]:
    entry = copy.deepcopy(config)
    entry["total_sparsity"] = 1.0 - left / total if total else 0.0
    return entry


def compute_sparsity_compact2origin(origin_model: nn.Module, compact_model: nn.Module,
                                    config_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sparsity from shapes alone: ``1 - (weight elements left in compact_model) / (weight
    elements in origin_model)``, over the modules each config selects (same names in both).

    Example:
        >>> from torch import nn
        >>> origin = nn.Sequential(nn.Linear(10, 10))
        >>> compact = nn.Sequential(nn.Linear(10, 5))
        >>> compute_sparsity_compact2origin(origin, compact, [{"op_types": ["Linear"]}])
        [{'op_types': ['Linear'], 'total_sparsity': 0.5}]
    """
    out = []
    for index, (config, selection) in enumerate(zip(config_list, _configs(config_list))):
        total = sum(_weights(origin_model, index, selection).values())
        left = sum(_weights(compact_model, index, selection).values())
        out.append(_with_sparsity(config, left, total))
    return out


def compute_sparsity_mask2compact(compact_model: nn.Module, compact_model_masks: Masks,
                                  config_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sparsity from the masks: the zeros of each selected module's ``weight`` mask over its
    weight elements (a module without a mask counts as dense).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 2))
        >>> masks = {"0": {"weight": torch.tensor([[1., 1., 0., 0.], [1., 1., 1., 1.]])}}
        >>> compute_sparsity_mask2compact(net, masks, [{"op_names": ["0"]}])[0]["total_sparsity"]
        0.25
    """
    out = []
    for index, (config, selection) in enumerate(zip(config_list, _configs(config_list))):
        sizes = _weights(compact_model, index, selection)
        left = 0
        for name, size in sizes.items():
            mask = compact_model_masks.get(name, {}).get("weight")
            left += int(torch.count_nonzero(mask)) if isinstance(mask, torch.Tensor) else size
        out.append(_with_sparsity(config, left, sum(sizes.values())))
    return out


def compute_sparsity(origin_model: nn.Module, compact_model: nn.Module, compact_model_masks: Masks,
                     config_list: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                 list[dict[str, Any]]]:
    """``(current2origin, compact2origin, mask2compact)``: how much of ``origin_model`` is gone
    in ``compact_model`` with ``compact_model_masks`` applied, then each part alone
    (``current = 1 - (1 - compact2origin) * (1 - mask2compact)``). After speedup pass ``{}``
    as the masks; before it, the same model twice.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> origin, compact = nn.Sequential(nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 2))
        >>> masks = {"0": {"weight": torch.tensor([[1., 1., 1., 1.], [0., 0., 0., 0.]])}}
        >>> [r[0]["total_sparsity"] for r in compute_sparsity(origin, compact, masks, [{"op_names": ["0"]}])]
        [0.75, 0.5, 0.5]
    """
    compact2origin = compute_sparsity_compact2origin(origin_model, compact_model, config_list)
    mask2compact = compute_sparsity_mask2compact(compact_model, compact_model_masks, config_list)
    current = []
    for c2o, m2c, config in zip(compact2origin, mask2compact, config_list):
        entry = copy.deepcopy(config)
        entry["total_sparsity"] = 1.0 - (1.0 - c2o["total_sparsity"]) * (1.0 - m2c["total_sparsity"])
        current.append(entry)
    return current, compact2origin, mask2compact
