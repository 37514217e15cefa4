"""Pruned checkpoints that load where their users already are: safetensors weights, a
``config.json`` that tells the truth about the shapes, and ``hubcompress.json`` (base model,
revision, task, versions).

Three cases, from simplest for the consumer:
- nothing narrowed, or the stock config can state the new shape (one FFN width in every layer):
  config.json gets the real numbers and plain ``AutoModel.from_pretrained`` loads it;
- otherwise config.json carries a ``hubcompress`` entry (each narrowed module and the changed
  attributes around it) and ``auto_map``, and ``modeling_hubcompress.py`` (torch + transformers
  only) rebuilds the model from it: ``AutoModel.from_pretrained(path, trust_remote_code=True)``.
  Plain loading without remote code builds the stock shapes and transformers refuses the weights;
- a module only a user's own replacer can build: the entry is written, ``auto_map`` is not, and only
  :func:`from_pretrained` (with that replacer registered) loads it.

No pickle anywhere.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import TEMP_MARK, default_mode
from .errors import CheckpointError
from .remote_code import MODELING_FILE, SPEC_KEY, buildable, config_with_spec, modeling_source, narrowing_spec

logger = logging.getLogger(__name__)
MANIFEST = "hubcompress.json"
FORMAT = 2


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


def _plain_config(model: nn.Module) -> Any | None:
    """The stock config with the FFN width every layer kept, when that describes the model exactly."""
    from .architectures import ARCHITECTURES, layer_widths

    arch = ARCHITECTURES.get(getattr(model.config, "model_type", None))
    if arch is None:
        return None
    widths = {row["ffn"] for row in layer_widths(model)}
    if len(widths) != 1:
        return None
    candidate = copy.deepcopy(model.config)
    setattr(candidate, arch.config_names.intermediate, widths.pop())
    return candidate if narrowing_spec(model, candidate) is None else None


def describe(model: nn.Module) -> tuple[Any, str]:
    """The config to save with ``model`` and how consumers load it: ``"plain"`` (stock transformers),
    ``"remote-code"`` (``trust_remote_code=True``) or ``"hubcompress"`` (a user's replacer is needed)."""
    spec = narrowing_spec(model)
    if spec is None:
        return model.config, "plain"
    plain = _plain_config(model)
    if plain is not None:
        return plain, "plain"
    config = config_with_spec(model.config, spec, model)
    unbuildable = buildable(spec, model)
    if unbuildable:
        logger.warning("%s: narrowed by a custom replacer; only hubcompress.from_pretrained (with it registered) can "
                       "load this checkpoint", ", ".join(unbuildable[:3]))
        del config.auto_map
        return config, "hubcompress"
    return config, "remote-code"


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, *, base_model: str | None = None,
                    revision: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a (pruned) transformers model: safetensors, config.json (+ modeling_hubcompress.py
    where the stock architecture cannot describe the shapes) and hubcompress.json.

    Example:
        >>> import tempfile, torch
        >>> from transformers import BertConfig, BertModel
        >>> m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                          intermediate_size=64, vocab_size=50))
        >>> d = save_pretrained(m, tempfile.mkdtemp())
        >>> sorted(p.name for p in d.iterdir())
        ['config.json', 'hubcompress.json', 'model.safetensors']
        >>> m.encoder.layer[0].attention.self.query = torch.nn.Linear(32, 16)   # two of four heads
        >>> m.encoder.layer[0].attention.self.key = torch.nn.Linear(32, 16)
        >>> m.encoder.layer[0].attention.self.value = torch.nn.Linear(32, 16)
        >>> m.encoder.layer[0].attention.output.dense = torch.nn.Linear(16, 32)
        >>> m.encoder.layer[0].attention.self.num_attention_heads = 2
        >>> d = save_pretrained(m, tempfile.mkdtemp())
        >>> json.loads((d / "config.json").read_text())["auto_map"]
        {'AutoModel': 'modeling_hubcompress.NarrowedBertModel'}
    """
    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise CheckpointError(f"{type(model).__name__} is not a transformers model (no config / save_pretrained).")
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    config, loading = describe(model)
    manifest = {
        "format": FORMAT,
        "architecture": type(model).__name__,
        "base_model": base_model or getattr(model.config, "_name_or_path", None) or None,
        "revision": revision,
        "loading": loading,
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": library_versions(),
        **(extra or {}),
    }
    live_config = model.config
    # Weights go to a temp folder first and move in by rename: a killed save leaves the old files.
    with tempfile.TemporaryDirectory(dir=out, prefix=".saving-", suffix=TEMP_MARK) as tmp:
        model.config = config  # what save_pretrained writes; the live model keeps its own
        try:
            model.save_pretrained(tmp, safe_serialization=True)
        finally:
            model.config = live_config
        if loading == "remote-code":
            (Path(tmp) / MODELING_FILE).write_text(modeling_source(model), encoding="utf-8")
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2))
        default_mode(Path(tmp))
        for item in Path(tmp).iterdir():
            os.replace(item, out / item.name)
    if loading != "remote-code":
        (out / MODELING_FILE).unlink(missing_ok=True)  # left by an earlier save of another shape
    return out


def _replacer_fallback(module: nn.Module, name: str, entry: dict[str, Any]) -> nn.Module:
    """Build a module of a class the modeling file does not know, with the replacer speedup used."""
    from .speedup.replacers import REPLACERS

    replacer = REPLACERS.get(type(module).__name__)
    if replacer is None:
        raise CheckpointError(f"module {name} ({type(module).__name__}) was narrowed to a {entry['class']} but no "
                              "replacer is registered for its class; register the one used at speedup.")
    own = list(module._parameters.items()) + list(module._buffers.items())
    current = {n: list(t.shape) for n, t in own if t is not None}
    keep = {p: [torch.arange(old) < new for old, new in zip(current[p], shape)]
            for p, shape in entry["shapes"].items() if p in current}
    return replacer(module, keep)


def from_pretrained(dir_or_repo_id: str | os.PathLike, *, revision: str | None = None,
                    device: str | torch.device | None = None) -> nn.Module:
    """Load a model written by :func:`save_pretrained` (a folder or a hub repo id), the way
    transformers loads it with ``trust_remote_code=True``: the stock class, narrowed as config.json says.

    Example:
        >>> import tempfile
        >>> from transformers import BertConfig, BertModel
        >>> m = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                          intermediate_size=64, vocab_size=50))
        >>> type(from_pretrained(save_pretrained(m, tempfile.mkdtemp()))).__name__
        'BertModel'
    """
    import transformers

    from .hub import resolve_model_source
    from .remote_code import narrowed_class

    folder = Path(resolve_model_source(str(dir_or_repo_id), revision=revision))
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise CheckpointError(f"{folder} has no {MANIFEST}: it was not written by hubcompress.save_pretrained; "
                              "load it with transformers' from_pretrained instead.")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path}: format {manifest.get('format')} is not {FORMAT}; it was written by "
                              "another hubcompress version: rerun `hubcompress run` (or install that version).")
    cls = getattr(transformers, manifest["architecture"], None)
    if cls is None:
        raise CheckpointError(f"transformers has no class {manifest['architecture']!r}; upgrade transformers.")
    config = transformers.AutoConfig.from_pretrained(folder)
    if getattr(config, SPEC_KEY, None):
        cls = narrowed_class(cls, _replacer_fallback)
    if not (folder / "model.safetensors").exists():
        raise CheckpointError(f"{folder} has no model.safetensors (sharded checkpoints are not supported yet).")
    model = cls.from_pretrained(folder, config=config)
    model.eval()
    return model.to(device) if device is not None else model
