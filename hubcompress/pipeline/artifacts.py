"""Masks and calibration between stages: safetensors for the tensors, JSON for the rest (no pickle).

Example:
    >>> import tempfile, pathlib, torch
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_nested({"fc": {"weight": {"scale": torch.ones(2), "quant_dtype": "int8"}}}, folder, "calibration")
    >>> load_nested(folder, "calibration")["fc"]["weight"]["quant_dtype"]
    'int8'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

SEP = "::"


def _flatten(tree: dict[str, Any], prefix: str, tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    for key, value in tree.items():
        if SEP in key:
            raise ValueError(f"key {key!r} contains {SEP!r}, which the file format uses as a separator")
        path = f"{prefix}{SEP}{key}" if prefix else key
        if isinstance(value, dict):
            _flatten(value, path, tensors, plain)
        elif isinstance(value, torch.Tensor):
            tensors[path] = value.detach().cpu().contiguous()
        else:
            plain[path] = value


def save_nested(tree: dict[str, Any], folder: Path, name: str) -> None:
    """Write ``tree`` (nested dicts of tensors and JSON values) as ``name.safetensors`` + ``name.json``
    into ``folder`` (which the caller makes atomic)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    _flatten(tree, "", tensors, plain)
    # Hidden-width pruning gives every module on the residual stream the same mask tensor; safetensors
    # refuses shared storage, so each later sharer is written as its own copy.
    seen: set[int] = set()
    for key, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen:
            tensors[key] = tensor.clone()
        seen.add(storage)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(plain, indent=1))


def load_nested(folder: Path, name: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    items = list(load_file(str(folder / f"{name}.safetensors")).items())
    items += list(json.loads((folder / f"{name}.json").read_text()).items())
    for path, value in items:
        *parents, leaf = path.split(SEP)
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
