"""Describe a pruned model in its own ``config.json`` and ship the code that reads the description.

:func:`narrowing_spec` compares a model with the stock model its config builds and lists what
differs: each narrowed module (class, parameter shapes, changed attributes) and the changed
attributes of the blocks around them (an attention block's head count). :func:`modeling_source`
is the self-contained ``modeling_hubcompress.py`` (torch and transformers only) with one class per
auto class, named in ``auto_map``, that rebuilds the narrowed model from that description.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=50))
    >>> narrowing_spec(model) is None
    True
    >>> model.encoder.layer[0].intermediate.dense = torch.nn.Linear(32, 16)
    >>> spec = narrowing_spec(model)
    >>> spec["modules"]["encoder.layer.0.intermediate.dense"]["shapes"]
    {'weight': [16, 32], 'bias': [16]}
    >>> auto_map(model)
    {'AutoModel': 'modeling_hubcompress.NarrowedBertModel'}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .modeling_hubcompress import CLASS_BUILDERS, SPEC_FORMAT, SPEC_KEY, NarrowedModelMixin, narrow

MODELING_FILE = "modeling_hubcompress.py"
_SOURCE = Path(__file__).with_name(MODELING_FILE)

# The auto classes a published model may be loaded through; auto_map names those that map to the
# saved class, and AutoModel (the bare encoder, what sentence-transformers loads).
AUTO_CLASSES = (
    "AutoModel", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering", "AutoModelForMaskedLM", "AutoModelForCausalLM",
    "AutoModelForImageClassification", "AutoModelForPreTraining",
)
_SIMPLE = (int, float, bool, str, type(None))

__all__ = ["MODELING_FILE", "SPEC_KEY", "NarrowedModelMixin", "auto_map", "buildable", "modeling_source", "narrow",
           "narrowing_spec"]


def _simple_attributes(module: nn.Module) -> dict[str, Any]:
    """The plain attributes of a module (sizes, counts, flags): what a fixer or a replacer changes."""
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, _SIMPLE):
            out[key] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, _SIMPLE) for v in value):
            out[key] = list(value)
    return out


def _changed_attributes(module: nn.Module, reference: nn.Module) -> dict[str, Any]:
    ref = _simple_attributes(reference)
    return {k: v for k, v in _simple_attributes(module).items() if k not in ref or ref[k] != v}


def _shapes(module: nn.Module) -> dict[str, list[int]]:
    own = list(module._parameters.items()) + list(module._buffers.items())
    return {n: list(t.shape) for n, t in own if t is not None}


def narrowing_spec(model: nn.Module, config: Any = None) -> dict[str, Any] | None:
    """What differs between ``model`` and the stock model ``config`` (default: its own) builds; None
    when nothing does. Modules the model lacks or adds are errors (speedup only narrows)."""
    config = config if config is not None else model.config
    with torch.device("meta"):
        reference = type(model)(config)
    ref_modules = dict(reference.named_modules())
    modules: dict[str, Any] = {}
    for name, module in model.named_modules():
        ref = ref_modules.get(name)
        if ref is None:
            raise CheckpointError(f"module {name!r} is not part of {type(model).__name__} as its config builds it; "
                                  "a pruned checkpoint records narrowed modules, not added ones.")
        if _shapes(module) != _shapes(ref) or type(module).__name__ != type(ref).__name__:
            modules[name] = {"class": type(module).__name__, "shapes": _shapes(module),
                             "attributes": _changed_attributes(module, ref)}
    if not modules:
        return None
    # The blocks around narrowed modules hold their sizes too (an attention block's head count).
    attributes: dict[str, Any] = {}
    parents = {name.rsplit(".", depth)[0] for name in modules for depth in range(1, name.count(".") + 1)}
    for name in sorted(parents - set(modules)):
        changed = _changed_attributes(model.get_submodule(name), ref_modules[name])
        if changed:
            attributes[name] = changed
    modules.update(_unsaved_base_modules(model, config, modules))
    return {"format": SPEC_FORMAT, "modules": modules, "attributes": attributes}


def _unsaved_base_modules(model: nn.Module, config: Any, modules: dict[str, Any]) -> dict[str, Any]:
    """Entries for Linear modules the bare encoder class has and the saved task class lacks (RoBERTa's
    classifier drops the pooler that ``AutoModel`` builds). transformers initialises them at random
    anyway; they must still read the narrowed residual stream, or the encoder's forward fails."""
    widths = {(e["attributes"].get("full_width"), e["shapes"].get("weight", e["shapes"].get("bias"))[0])
              for e in modules.values() if e["class"] == "WidthPrunedLayerNorm"}
    prefix = getattr(model, "base_model_prefix", "")
    if len(widths) != 1 or not prefix or not hasattr(model, prefix):
        return {}
    full, width = widths.pop()
    base_class = type(getattr(model, prefix))
    with torch.device("meta"):
        base = base_class(config)
    saved = {name for name, _ in getattr(model, prefix).named_modules()}
    extra = {}
    for name, module in base.named_modules():
        if name in saved or not isinstance(module, nn.Linear):
            continue
        out_f, in_f = (width if d == full else d for d in (module.out_features, module.in_features))
        if (out_f, in_f) != (module.out_features, module.in_features):
            extra[f"{prefix}.{name}"] = {"class": "Linear", "shapes": {"weight": [out_f, in_f], "bias": [out_f]},
                                         "attributes": {"in_features": in_f, "out_features": out_f}}
    return extra


def buildable(spec: dict[str, Any], model: nn.Module) -> list[str]:
    """Narrowed modules whose class the modeling file cannot build (a user's own replacer made them)."""
    with torch.device("meta"):
        reference = type(model)(model.config)
    ref_modules = dict(reference.named_modules())
    return [name for name, entry in spec["modules"].items() if name in ref_modules
            and entry["class"] not in CLASS_BUILDERS and entry["class"] != type(ref_modules[name]).__name__]


def _auto_classes(model: nn.Module) -> dict[str, str]:
    import transformers

    found = {}
    for auto in AUTO_CLASSES:
        try:
            cls = getattr(transformers, auto)._model_mapping[type(model.config)]
        except KeyError:
            continue
        cls = cls[0] if isinstance(cls, (list, tuple)) else cls
        if auto == "AutoModel" or cls.__name__ == type(model).__name__:
            found[auto] = cls.__name__
    if type(model).__name__ not in found.values():
        found.setdefault("AutoModel", type(model).__name__)
    return found


def auto_map(model: nn.Module) -> dict[str, str]:
    """config.json's ``auto_map`` for a narrowed model: each auto class to its class in the file."""
    return {auto: f"{MODELING_FILE[:-3]}.Narrowed{name}" for auto, name in _auto_classes(model).items()}


def modeling_source(model: nn.Module) -> str:
    """The text of ``modeling_hubcompress.py`` for this model: the narrowing code and its classes."""
    lines = [_SOURCE.read_text(encoding="utf-8").rstrip(), "", "",
             "# The classes config.json's auto_map names, each the stock transformers class, narrowed.",
             "import transformers  # noqa: E402", ""]
    for name in sorted(set(_auto_classes(model).values())):
        lines += ["", f"class Narrowed{name}(NarrowedModelMixin, transformers.{name}):",
                  f'    """transformers\' {name}, with the modules config.json lists narrowed."""', ""]
    return "\n".join(lines).rstrip() + "\n"


def narrowed_class(cls: type, fallback: Any = None) -> type:
    """``cls`` with :class:`NarrowedModelMixin` in front (what the modeling file's classes are)."""
    return type(f"Narrowed{cls.__name__}", (NarrowedModelMixin, cls),
                {"narrow_fallback": staticmethod(fallback) if fallback else None, "__module__": __name__})


def config_with_spec(config: Any, spec: dict[str, Any], model: nn.Module) -> Any:
    """A copy of ``config`` carrying the spec and the auto_map."""
    config = copy.deepcopy(config)
    setattr(config, SPEC_KEY, spec)
    config.auto_map = auto_map(model)
    return config
