"""``count_flops_params``: NNI's FLOPs and parameter counter, measured by torch's own
``torch.utils.flop_counter.FlopCounterMode`` during one forward.

FLOPs follow NNI's convention: multiply-accumulates per sample (a ``Linear(in, out)`` on one
vector is ``in * out``), so a batch of 8 counts like a batch of 1. Each module's row holds the
operations its own ``forward`` ran outside its children (so the attention matmuls of a
transformer layer are counted on the attention module, and the rows add up to the total).
torch counts matrix products and convolutions, not elementwise operations. A module wrapped by
a pruner counts the fraction of its weight that its mask keeps.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from ..config.selection import WRAPPER_ATTR, compressible_modules

logger = logging.getLogger(__name__)

CustomOp = Callable[[nn.Module, tuple, Any], dict[str, Any]]


def _own_params(module: nn.Module, recurse: bool) -> int:
    return sum(p.numel() for name, p in module.named_parameters(recurse=recurse)
               if WRAPPER_ATTR not in name.split("."))


def _is_leaf(module: nn.Module) -> bool:
    return all(name == WRAPPER_ATTR for name, _ in module.named_children())


def _kept_fraction(module: nn.Module) -> float:
    wrapper = module._modules.get(WRAPPER_ATTR)
    space = getattr(wrapper, "target_spaces", {}).get("pruning", {}).get("weight") if wrapper is not None else None
    mask = getattr(space, "mask", None)
    return float(mask.float().mean()) if mask is not None else 1.0


def _first_shape(value: Any) -> tuple[int, ...]:
    tensors = [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
    return tuple(tensors[0].shape) if tensors else ()


def _inputs(x: Any, device: torch.device) -> tuple[tuple, dict]:
    if isinstance(x, dict):
        return (), {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return (x.to(device),), {}
    if isinstance(x, (tuple, list)) and x and all(isinstance(d, int) for d in x):
        return (torch.zeros(x, device=device),), {}
    if isinstance(x, (tuple, list)):
        return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in x), {}
    raise TypeError(f"count_flops_params takes an input shape (a tuple of ints), a tensor, a tuple of tensors or a "
                    f"dict of keyword inputs, got {type(x).__name__}.")


def format_results(results: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table (NNI printed the same columns)."""
    headers = ["Index", "Name", "Type", "Weight Shape", "Input Size", "Output Size", "FLOPs", "#Params"]
    rows = [[str(i), r["name"] or "(root)", r["module_type"], str(r["weight_shape"]), str(r["input_size"]),
             str(r["output_size"]), str(int(r["flops"])), str(r["params"])] for i, r in enumerate(results)]
    widths = [max(len(h), *(len(row[c]) for row in rows)) if rows else len(h) for c, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    return "\n".join([rule, line(headers), rule, *(line(r) for r in rows), rule])


def count_flops_params(model: nn.Module, x: Any, custom_ops: dict[type, CustomOp] | None = None,
                       verbose: bool = True, mode: str = "default") -> tuple[int, int, list[dict[str, Any]]]:
    """Count the FLOPs (multiply-accumulates per sample) and parameters of ``model`` on ``x``.

    ``x`` is an input shape (a tuple of ints: a zero tensor is made), a tensor, a tuple of
    positional tensors, or a dict of keyword inputs. Returns ``(flops, params, results)``:
    ``results`` has one dict per counted module call with ``name``, ``module_type``,
    ``weight_shape``, ``input_size``, ``output_size``, ``flops`` and ``params``; ``flops`` and
    ``params`` are the sums over the rows (a module called twice counts its parameters once).
    ``mode='default'`` keeps the rows with FLOPs (convolutions, linear layers, attention);
    ``'full'`` keeps every leaf module too. ``custom_ops`` maps a module class to
    ``fn(module, inputs, output) -> {'flops': ..., 'params': ..., 'weight_shape': ...}`` for
    that class's rows. With ``verbose`` the table goes to this module's logger at INFO level.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
        >>> flops, params, rows = count_flops_params(net, (2, 1, 8, 8), verbose=False)
        >>> flops == 4 * 6 * 6 * 9 + 144 * 10, params == (4 * 9 + 4) + (144 * 10 + 10)
        (True, True)
        >>> [r["name"] for r in rows]
        ['0', '3']
    """
    if mode not in ("default", "full"):
        raise ValueError(f"mode must be 'default' or 'full', got {mode!r}.")
    custom_ops = custom_ops or {}
    device = next(model.parameters(), torch.zeros(())).device
    args, kwargs = _inputs(x, device)
    first = next((t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)), None)
    batch = int(first.shape[0]) if first is not None and first.dim() > 0 else 1

    counter = FlopCounterMode(display=False)
    names = {module: name for name, module in compressible_modules(model).items()}
    names[model] = ""
    stack: list[list[int]] = []  # per running module: [total flops at entry, flops of its children]
    results: list[dict[str, Any]] = []

    def before(module: nn.Module, inputs: tuple) -> None:
        stack.append([counter.get_total_flops(), 0])

    def after(module: nn.Module, inputs: tuple, output: Any) -> None:
        start, children = stack.pop()
        inclusive = counter.get_total_flops() - start
        if stack:
            stack[-1][1] += inclusive
        own = (inclusive - children) / 2 / batch  # FLOPs -> multiply-accumulates per sample
        leaf = _is_leaf(module)
        row = {"flops": round(own * _kept_fraction(module)), "params": _own_params(module, recurse=leaf),
               "weight_shape": tuple(module.weight.shape) if isinstance(getattr(module, "weight", None),
                                                                       torch.Tensor) else 0}
        if type(module) in custom_ops:
            row.update(custom_ops[type(module)](module, inputs, output))
        elif not (row["flops"] > 0 or (mode == "full" and leaf)):
            return
        results.append({"name": names[module], "input_size": _first_shape(inputs),
                        "output_size": _first_shape(output), "module_type": type(module).__name__, **row})

    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(*args, **kwargs)
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    order = {name: i for i, name in enumerate(names.values())}
    results.sort(key=lambda r: order[r["name"]])  # model order (post-hooks ran innermost first)
    flops = int(sum(r["flops"] for r in results))
    params = int(sum({r["name"]: r["params"] for r in results}.values()))
    if verbose:
        logger.info("FLOPs and parameters of %s:\n%s\nFLOPs total: %d\n#Params total: %d",
                    type(model).__name__, format_results(results), flops, params)
    return flops, params, results
