"""The base of every pruner: metrics → masks, ``get_masks`` / ``update_masks``, unwrap."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import torch

from ...errors import CompressionError
from ..compressor import Compressor
from ..distributed import broadcast_masks
from .granularity import block_reduce
from .mask_generation import Item, Masks, generate_masks, make_item
from .target_space import PruningTargetSpace

logger = logging.getLogger(__name__)


class Pruner(Compressor):
    """Subclasses say how a target is measured (``_metric``); everything else is shared.

    ``compress()`` returns ``(model, masks)`` with masks as
    ``{module_name: {target_name: 0/1 tensor}}`` (parameter masks shaped like the parameter;
    activation masks broadcastable to the activation).
    """

    kind = "pruning"
    target_space_cls = PruningTargetSpace
    element_default = False  # LevelPruner: 'default' granularity means element-wise
    _target_spaces: dict[str, dict[str, PruningTargetSpace]]

    def _spaces(self) -> Iterator[PruningTargetSpace]:
        for spaces in self._target_spaces.values():
            yield from spaces.values()

    # --- measuring ----------------------------------------------------------------------------
    def kernel_of(self, space: PruningTargetSpace) -> list[int]:
        if space.is_activation:
            g = space.granularity
            # Without a kernel list the activation's rank is unknown here: reduce to the channel
            # (last) dim, which broadcasts over any leading batch / sequence dims.
            return space.kernel([0] * len(g) if isinstance(g, (list, tuple)) else [0])
        return space.kernel(space.target.shape, element_default=self.element_default)

    def effective(self, space: PruningTargetSpace) -> torch.Tensor:
        """The target as the model sees it now (already-masked entries stay at zero metric)."""
        value = space.target.detach()
        if space.mask is not None:
            value = value * space.mask
        return value

    def _metric(self, space: PruningTargetSpace, kernel: list[int]) -> torch.Tensor | None:
        """Block-reduced importance of one target (higher is kept), or None if not measurable."""
        if space.is_activation:
            return None
        return block_reduce(self.effective(space), kernel, "l1")

    def _items(self) -> tuple[list[Item], list[PruningTargetSpace]]:
        items, aligned = [], []
        for space in self._spaces():
            if space.sparse_ratio is not None or space.sparse_threshold is not None or space.dependency_group_id is not None:
                kernel = self.kernel_of(space)
                shape = None if space.is_activation else list(space.target.shape)
                metric = self._metric(space, kernel)
                # Masks are decided on the CPU (the metrics are small: one value per block), so a
                # model on a GPU gets the same masks, and update_masks moves them to each target.
                items.append(make_item(space, metric.cpu() if metric is not None else None, kernel, shape))
            elif space.align:
                aligned.append(space)
        return items, aligned

    # --- masks --------------------------------------------------------------------------------
    def generate_masks(self) -> Masks:
        """Measure every target, make masks, apply them; returns the masks."""
        with torch.no_grad():
            self._sync_metric_data()
            items, aligned = self._items()
            # Under torch.distributed the metric data is all-reduced above, and rank 0's masks
            # are sent to every rank, so ties or drift can never make the ranks' masks differ.
            masks = broadcast_masks(generate_masks(items, aligned))
        self.update_masks(masks)
        return masks

    def _sync_metric_data(self) -> None:
        """Combine what each process measured (multi-process training); measured-on-weights
        pruners need nothing, since data-parallel training keeps the weights equal."""

    def update_masks(self, masks: Masks) -> None:
        """Set masks (``{module_name: {target_name: tensor}}``) on this pruner's targets."""
        for module_name, targets in masks.items():
            spaces = self._target_spaces.get(module_name)
            if spaces is None:
                raise CompressionError(f"update_masks: {module_name!r} is not a module this pruner compresses "
                                       f"(it has {sorted(self._target_spaces)[:5]}...).")
            for target_name, mask in targets.items():
                if target_name not in spaces:
                    raise CompressionError(f"update_masks: {module_name}.{target_name} is not a target of this "
                                           f"pruner (targets: {sorted(spaces)}).")
                spaces[target_name].mask = mask.to(_device_of(spaces[target_name]))

    def get_masks(self) -> Masks:
        """The current masks, as ``{module_name: {target_name: 0/1 tensor}}``. They are the
        pruner's own tensors (often broadcast views, so a channel mask stays small): read them,
        or ``.contiguous()`` them to save; change masks through ``update_masks``."""
        out: Masks = {}
        for space in self._spaces():
            if space.mask is not None:
                out.setdefault(space.wrapper.module_name, {})[space.name] = space.mask
        return out

    def _start(self) -> None:
        if not self.needs_training:
            self.generate_masks()

    def _result(self) -> Masks:
        # Fused pruners report every pruner's masks, as one dict.
        masks: Masks = {}
        for c in self._fused + [self]:
            if isinstance(c, Pruner):
                for module_name, targets in c.get_masks().items():
                    masks.setdefault(module_name, {}).update(targets)
        return masks

    def unwrap_model(self, apply_masks: bool = False) -> None:
        """Remove the wrappers. With ``apply_masks`` the parameter and buffer masks are first
        multiplied into the tensors, so the unwrapped model computes what the masked one did."""
        if apply_masks:
            with torch.no_grad():
                for space in self._spaces():
                    if space.mask is not None and space.target is not None and space.apply_method == "mul":
                        space.target.mul_(space.mask.to(space.target.dtype))
        super().unwrap_model()


def _device_of(space: Any) -> torch.device:
    """Where a target lives: its tensor's device, or for an activation its module's parameters'."""
    if space.target is not None:
        return space.target.device
    return next(space.wrapper.module.parameters(), torch.zeros(())).device


def sparsity_report(masks: Masks) -> dict[str, dict[str, float]]:
    """Fraction of zeros per mask: ``{module: {target: ratio}}``.

    Example:
        >>> import torch
        >>> sparsity_report({"fc": {"weight": torch.tensor([1., 0., 0., 1.])}})
        {'fc': {'weight': 0.5}}
    """
    return {m: {t: round(1.0 - float(mask.float().mean()), 6) for t, mask in targets.items()}
            for m, targets in masks.items()}
