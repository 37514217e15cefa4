"""Pruned checkpoints that reload: safetensors weights, the base ``config.json``, and
``hubcompress.json`` recording every module whose shapes differ from what the config builds.

``config.json`` stays the base architecture's (a config cannot say that layer 3 kept 5 heads
and layer 4 kept 7); the manifest says it, and ``from_pretrained`` rebuilds the base model from
the config, narrows each recorded module with the same replacers speedup used, and loads the
weights. No pickle anywhere.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import default_mode
from .errors import HubcompressError

logger = logging.getLogger(__name__)
MANIFEST = "hubcompress.json"
FORMAT = 1


def library_versions(packages: tuple[str, ...] = ("hubcompress", "torch", "transformers", "safetensors")) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones left out), for manifests and model cards.

    Example:
        >>> sorted(library_versions(("torch", "no-such-package")))
        ['torch']
    """
    out = {}
    for pkg in packages:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _shapes(module: nn.Module) -> dict[str, list[int]]:
    own = list(module._parameters.items()) + list(module._buffers.items())
    return {n: list(t.shape) for n, t in own if t is not None}


def _changed_modules(model: nn.Module) -> dict[str, dict[str, Any]]:
    with torch.device("meta"):
        reference = type(model)(model.config)
    ref_modules = dict(reference.named_modules())
    changed = {}
    for name, module in model.named_modules():
        ref = ref_modules.get(name)
        if ref is None:
            raise HubcompressError(f"module {name!r} is not part of {type(model).__name__} as its config builds it; "
                                   "save_pretrained records narrowed modules, not added ones.")
        if _shapes(module) != _shapes(ref) or type(module).__name__ != type(ref).__name__:
            entry: dict[str, Any] = {"class": type(module).__name__, "shapes": _shapes(module)}
            if hasattr(module, "full_width"):
                entry["full_width"] = module.full_width
            changed[name] = entry
    return changed


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, *, base_model: str | None = None,
                    revision: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a (pruned) transformers model: safetensors + config.json + hubcompress.json.

    Example:
        >>> import tempfile, torch
        >>> from transformers import BertConfig, BertModel
        >>> m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                          intermediate_size=64, vocab_size=50))
        >>> d = save_pretrained(m, tempfile.mkdtemp())
        >>> sorted(p.name for p in d.iterdir())
        ['config.json', 'hubcompress.json', 'model.safetensors']
    """
    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise HubcompressError(f"{type(model).__name__} is not a transformers model (no config / save_pretrained).")
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "architecture": type(model).__name__,
        "base_model": base_model or getattr(model.config, "_name_or_path", None) or None,
        "revision": revision,
        "modules": _changed_modules(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": library_versions(),
        **(extra or {}),
    }
    # Weights go to a temp folder first and move in by rename: a killed save leaves the old files.
    with tempfile.TemporaryDirectory(dir=out, prefix=".saving-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2))
        default_mode(Path(tmp))
        for item in Path(tmp).iterdir():
            os.replace(item, out / item.name)
    return out


def from_pretrained(dir_or_repo_id: str | os.PathLike, *, revision: str | None = None,
                    device: str | torch.device | None = None) -> nn.Module:
    """Rebuild and load a model written by :func:`save_pretrained` (a folder or a hub repo id).

    Example:
        >>> import tempfile
        >>> from transformers import BertConfig, BertModel
        >>> m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                          intermediate_size=64, vocab_size=50))
        >>> type(from_pretrained(save_pretrained(m, tempfile.mkdtemp()))).__name__
        'BertModel'
    """
    import transformers
    from safetensors.torch import load_file

    from .hub import resolve_model_source
    from .speedup.block_fixers import BLOCK_FIXERS
    from .speedup.replacers import REPLACERS

    folder = Path(resolve_model_source(str(dir_or_repo_id), revision=revision))
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise HubcompressError(f"{folder} has no {MANIFEST}: it was not written by hubcompress.save_pretrained; "
                               "load it with transformers' from_pretrained instead.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise HubcompressError(f"{manifest_path}: format {manifest.get('format')} is not {FORMAT}; upgrade hubcompress.")
    cls = getattr(transformers, manifest["architecture"], None)
    if cls is None:
        raise HubcompressError(f"transformers has no class {manifest['architecture']!r}; upgrade transformers.")
    config = transformers.AutoConfig.from_pretrained(folder)
    model = cls(config)
    for name, entry in manifest["modules"].items():
        module = model.get_submodule(name)
        replacer = REPLACERS.get(type(module).__name__)
        if replacer is None:
            raise HubcompressError(f"{manifest_path}: module {name} ({type(module).__name__}) was narrowed but no "
                                   "replacer is registered for its class; register the one used at speedup.")
        keep = {p: [torch.arange(old) < new for old, new in zip(_shapes(module)[p], shape)]
                for p, shape in entry["shapes"].items() if p in _shapes(module)}
        new = replacer(module, keep)
        if "full_width" in entry:
            new.full_width = entry["full_width"]
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    for name, module in model.named_modules():
        fixer = BLOCK_FIXERS.get(type(module).__name__)
        if fixer is not None and any(m.startswith(name + ".") for m in manifest["modules"]):
            fixer(module, name)
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise HubcompressError(f"{folder} has no model.safetensors (sharded checkpoints are not supported yet).")
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not any(k.endswith(t) for t in tied)]
    if missing or unexpected:
        raise HubcompressError(f"{weights}: weights do not match the rebuilt model (missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}).")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    model.eval()
    return model.to(device) if device is not None else model
