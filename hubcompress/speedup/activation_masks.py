"""Masks on a module's first input or output (``_input_`` / ``_output_``), folded into its
parameters so that speedup only ever reads parameter masks.

A mask on a projection's input is a mask on its weight's input columns; one on its output a
mask on its output rows and bias; one on a normalisation layer's output (NNI's fusion examples
mask each BatchNorm's ``_output_`` along its conv) a mask on its affine weight and bias. Each is
exact: masked channels come out as zeros either way.

Example:
    >>> import torch
    >>> from torch import nn
    >>> bn = nn.BatchNorm2d(4)
    >>> masks = {}
    >>> fold_activation_masks({"bn": bn}, {("bn", "_output_"): torch.tensor([1., 0., 1., 1.])}, masks)
    >>> masks["bn.weight"].tolist(), masks["bn.bias"].tolist()
    ([1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0])
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ReplacementError

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _fold_dims(module: nn.Module, target: str) -> dict[str, int] | None:
    """{parameter name: the dim the channel mask runs along}, or None where no exact fold exists."""
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd) or type(module).__name__ == "Conv1D"
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or type(module).__name__ == "Conv1D":
        out_dim, in_dim = (1, 0) if transposed else (0, 1)
        # a grouped weight holds only one group's channels along one of its dims
        per_group = in_dim if not transposed else out_dim
        if getattr(module, "groups", 1) != 1 and (out_dim if target == "_output_" else in_dim) == per_group:
            return None
        return {"weight": out_dim, "bias": 0} if target == "_output_" else {"weight": in_dim}
    if target == "_output_" and isinstance(module, _NORMS) and getattr(module, "weight", None) is not None \
            and module.weight.dim() == 1:
        return {"weight": 0, "bias": 0}
    return None


def fold_activation_masks(modules: dict[str, nn.Module], activation_masks: dict[tuple[str, str], torch.Tensor],
                          param_masks: dict[str, torch.Tensor]) -> None:
    """Multiply each activation mask into ``param_masks`` (``{fqn: mask}``, updated in place)."""
    for (name, target), mask in activation_masks.items():
        module = modules[name]
        dims = _fold_dims(module, target)
        if dims is None:
            raise ReplacementError(
                f"{name}.{target}: speedup applies an activation mask by folding it into the parameters of a Linear, "
                f"a convolution (an input mask: ungrouped) or a normalisation layer's affine output; "
                f"{type(module).__name__} has no such fold. Put the mask on a neighbouring layer instead.")
        m = mask.flatten()
        for pname, dim in dims.items():
            tensor = getattr(module, pname, None)
            if tensor is None:
                continue
            if tensor.shape[dim] != m.numel():
                raise ReplacementError(f"{name}.{target}: a mask of {m.numel()} channels does not fit {pname} "
                                       f"{tuple(tensor.shape)} along dim {dim}; give one value per channel.")
            view = m.reshape([-1 if d == dim else 1 for d in range(tensor.dim())])
            fqn = f"{name}.{pname}" if name else pname
            base = param_masks.get(fqn, torch.ones_like(tensor, dtype=torch.float32))
            param_masks[fqn] = (base * view.to(base.dtype)).expand_as(tensor).contiguous()
