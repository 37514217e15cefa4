"""One-shot pruners measured on the weights alone: Level, L1, L2, FPGM."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..wrapper import ModuleWrapper
from .base import Pruner
from .granularity import block_reduce, reduced_shape, to_blocks
from .target_space import PruningTargetSpace


class _OneShot(Pruner):
    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], *,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None, evaluator: Any = None):
        super().__init__(model, config_list, evaluator=evaluator, existing_wrappers=existing_wrappers)


class LevelPruner(_OneShot):
    """Element-wise magnitude pruning (``granularity: default`` means single elements).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(8, 8))
        >>> _, masks = LevelPruner(net, [{"op_types": ["Linear"], "sparse_ratio": 0.25}]).compress()
        >>> float(1 - masks["0"]["weight"].mean())
        0.25
    """

    element_default = True


class L1NormPruner(_OneShot):
    """Structured pruning by the L1 norm of each block (output channels by default).

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(8, 8))
        >>> _, masks = L1NormPruner(net, [{"op_types": ["Linear"], "sparse_ratio": 0.5}]).compress()
        >>> masks["0"]["weight"].sum(1).tolist().count(0.0)
        4
    """


class L2NormPruner(_OneShot):
    """Structured pruning by the L2 norm of each block."""

    def _metric(self, space: PruningTargetSpace, kernel: list[int]) -> torch.Tensor | None:
        if space.is_activation:
            return None
        return block_reduce(self.effective(space), kernel, "l2")


class FPGMPruner(_OneShot):
    """Filter pruning via the geometric median: blocks closest to all others are the most
    replaceable, so the metric is each block's summed distance to every other block."""

    def _metric(self, space: PruningTargetSpace, kernel: list[int]) -> torch.Tensor | None:
        if space.is_activation:
            return None
        value = self.effective(space).float()
        blocks = to_blocks(value, kernel)
        distance = torch.cdist(blocks.unsqueeze(0), blocks.unsqueeze(0)).squeeze(0).sum(1)
        if space.mask is not None:  # a block already pruned stays pruned under a schedule
            distance = distance * (to_blocks(space.mask, kernel).amax(1) > 0)
        return distance.reshape(reduced_shape(kernel, value.shape))
