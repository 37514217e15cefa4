"""Pruned transformers models that load without hubcompress.

A pruned model keeps its architecture but some of its modules are narrower than the config says,
and not all alike (layer 3 may keep 5 heads, layer 4 seven). ``config.json`` carries a
``hubcompress`` entry listing each narrowed module (its class, the shapes of its parameters and
buffers, and its attributes that changed) and the attributes of the attention blocks around them.
This file builds the stock model from the config, then narrows those modules, so that
``AutoModel.from_pretrained(repo_id, trust_remote_code=True)`` loads the weights as they are.

It needs torch and transformers only (hubcompress writes it next to the weights and names it in
``auto_map``). The classes ``auto_map`` points at are appended below, one per auto class, each the
stock transformers class with :class:`NarrowedModelMixin` in front.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

SPEC_KEY = "hubcompress"  # the config.json entry this file reads
SPEC_FORMAT = 1


class WidthPrunedLayerNorm(nn.Module):
    """LayerNorm over ``width`` kept channels of a residual stream that was ``full_width`` wide.

    The removed channels were zeros, so they add nothing to the sums, but they still count in the
    mean and the variance; this norm keeps counting them, so it gives the full-width norm's numbers.

    Example:
        >>> full = nn.LayerNorm(4)
        >>> x = torch.tensor([[1.0, 2.0, 0.0, 3.0]])  # channel 2 is pruned (zero)
        >>> narrow = WidthPrunedLayerNorm(3, 4)
        >>> torch.allclose(narrow(x[:, [0, 1, 3]]), full(x)[:, [0, 1, 3]], atol=1e-6)
        True
    """

    def __init__(self, width: int, full_width: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True):
        super().__init__()
        self.normalized_shape = (width,)
        self.full_width = full_width
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(width)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.full_width == self.normalized_shape[0]:
            return nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        mean = x.sum(-1, keepdim=True) / self.full_width
        centred = x - mean
        missing = self.full_width - x.shape[-1]
        var = (centred.pow(2).sum(-1, keepdim=True) + missing * mean.pow(2)) / self.full_width
        out = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]} of {self.full_width}, eps={self.eps}"


def _width_pruned_layer_norm(old: nn.Module, entry: dict[str, Any]) -> nn.Module:
    shapes, attrs = entry["shapes"], entry.get("attributes", {})
    width = (shapes.get("weight") or shapes["bias"])[0]
    return WidthPrunedLayerNorm(width, attrs.get("full_width", getattr(old, "full_width", width)),
                                eps=attrs.get("eps", old.eps), elementwise_affine="weight" in shapes,
                                bias="bias" in shapes)


# Modules whose class changes when narrowed; every other class keeps its class and gets new shapes.
CLASS_BUILDERS: dict[str, Callable[[nn.Module, dict[str, Any]], nn.Module]] = {
    "WidthPrunedLayerNorm": _width_pruned_layer_norm,
}


def _set_attributes(module: nn.Module, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        # JSON has no tuples; a module that held a tuple (normalized_shape, kernel_size) gets one back.
        if isinstance(getattr(module, key, None), tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(module, key, value)


def _with_shapes(old: nn.Module, entry: dict[str, Any]) -> nn.Module:
    """A copy of ``old`` whose parameters and buffers have the entry's shapes (values follow at load)."""
    builder = CLASS_BUILDERS.get(entry["class"])
    if builder is not None:
        new = builder(old, entry)
    elif entry["class"] == type(old).__name__:
        new = copy.deepcopy(old)
        like = next(new.parameters(), None)
        for name, shape in entry["shapes"].items():
            tensor = new._parameters.get(name)
            if tensor is not None:
                new._parameters[name] = nn.Parameter(tensor.new_empty(shape), requires_grad=tensor.requires_grad)
            elif name in new._parameters and like is not None:  # a bias speedup added when it folded constants
                new._parameters[name] = nn.Parameter(like.new_empty(shape))
            elif new._buffers.get(name) is not None:
                new._buffers[name] = new._buffers[name].new_empty(shape)
            else:
                raise ValueError(f"{SPEC_KEY}: {entry['class']} has no parameter or buffer {name!r}")
    else:
        raise ValueError(f"{SPEC_KEY}: a narrowed {type(old).__name__} became a {entry['class']}, a class this "
                         "file cannot build")
    _set_attributes(new, entry.get("attributes", {}))
    reference = next(old.parameters(), None)
    if reference is not None:
        new.to(device=reference.device, dtype=reference.dtype)
    return new.train(old.training)


def _resolve(modules: dict[str, nn.Module], name: str, prefix: str) -> str | None:
    """The module ``name`` (recorded on the saved class) in this model: a base model loaded from a
    checkpoint with a task head lacks the head and the base-model prefix, and the other way round."""
    if name in modules:
        return name
    if prefix and name.startswith(prefix + ".") and name[len(prefix) + 1:] in modules:
        return name[len(prefix) + 1:]
    if prefix and f"{prefix}.{name}" in modules:
        return f"{prefix}.{name}"
    return None


def narrow(model: nn.Module, spec: dict[str, Any],
           fallback: Callable[[nn.Module, str, dict[str, Any]], nn.Module] | None = None) -> nn.Module:
    """Narrow ``model`` in place as ``spec`` (config.json's ``hubcompress`` entry) says.

    ``fallback(module, name, entry)`` builds modules of classes this file does not know.
    """
    if not spec:
        return model
    if spec.get("format", SPEC_FORMAT) > SPEC_FORMAT:
        raise ValueError(f"config.json's {SPEC_KEY} entry has format {spec['format']}, newer than this file reads "
                         f"({SPEC_FORMAT}); load it with the modeling file saved next to it")
    prefix = getattr(model, "base_model_prefix", "") or ""
    modules = dict(model.named_modules())
    for name, entry in spec.get("modules", {}).items():
        found = _resolve(modules, name, prefix)
        if found is None:
            continue  # a task head this class does not have
        old = modules[found]
        if fallback is not None and entry["class"] not in CLASS_BUILDERS and entry["class"] != type(old).__name__:
            new = fallback(old, found, entry)
        else:
            new = _with_shapes(old, entry)
        parent, _, child = found.rpartition(".")
        setattr(modules[parent] if parent else model, child, new)
    modules = dict(model.named_modules())
    for name, attributes in spec.get("attributes", {}).items():
        found = _resolve(modules, name, prefix)
        if found is not None:
            _set_attributes(modules[found], attributes)
    return model


def adopt_weight_renaming(narrowed: type, stock: type) -> None:
    """Give ``narrowed`` the checkpoint key renaming transformers applies to ``stock``.

    transformers 5 renames old checkpoint keys at load time (ViT's ``encoder.layer.N.attention.
    attention.query`` is ``layers.N.attention.q_proj`` in the module tree) but skips custom-code
    classes it does not know; registering the stock class's renaming under our name restores it.
    """
    try:
        from transformers.conversion_mapping import (
            get_checkpoint_conversion_mapping,
            register_checkpoint_conversion_mapping,
        )
    except ImportError:  # transformers 4: no renaming at load time, nothing to adopt
        return
    model_type = getattr(getattr(stock, "config_class", None), "model_type", None)
    mapping = get_checkpoint_conversion_mapping(stock.__name__) or (
        get_checkpoint_conversion_mapping(model_type) if model_type else None)
    if mapping:
        register_checkpoint_conversion_mapping(narrowed.__name__, mapping, overwrite=True)


class NarrowedModelMixin:
    """Put in front of a stock transformers model class: builds it from the config, then narrows it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        stock = next((base for base in cls.__mro__[1:] if base is not NarrowedModelMixin
                      and not issubclass(base, NarrowedModelMixin) and hasattr(base, "config_class")), None)
        if stock is not None:
            adopt_weight_renaming(cls, stock)

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        narrow(self, getattr(config, SPEC_KEY, None) or {},  # type: ignore[arg-type]
               fallback=getattr(self, "narrow_fallback", None))
