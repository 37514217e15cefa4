"""Whether a checkpoint has the head the recipe's task needs.

transformers loads a base model (a plain ``BertModel``, a sentence-transformers model) as
``AutoModelForSequenceClassification`` without complaint: it initialises ``classifier.*`` at random
and logs a note. A student distilled from that teacher copies a random classifier. So the head's
parameters (those of the task model outside its base model, e.g. ``classifier.weight``) are looked
up in the checkpoint before anything loads; a missing head is an error naming the weights and the
recipe key that fine-tunes one (``teacher.finetune``).

Example:
    >>> import tempfile, pathlib
    >>> from transformers import BertConfig, BertModel
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
    ...                     vocab_size=50)
    >>> BertModel(config).save_pretrained(folder)
    >>> missing_head(folder, config, "AutoModelForSequenceClassification")
    ['classifier.weight', 'classifier.bias']
    >>> missing_head(folder, config, "AutoModel")
    []
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..errors import MissingHeadError
from .stored_weights import stored_tensors

TEACHER_KEY = "teacher: {finetune: {epochs: 1}}"


def _skeleton(config: Any, auto_class: str, trust_remote_code: bool) -> torch.nn.Module:
    import transformers

    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        return getattr(transformers, auto_class).from_config(config, trust_remote_code=trust_remote_code)


def head_names(names: Iterable[str], prefix: str) -> list[str]:
    """The names in ``names`` that belong to the task head: outside the base model (``prefix``)."""
    return [name for name in names if not (prefix and (name == prefix or name.startswith(prefix + ".")))]


def missing_head(folder: str | Path, config: Any, auto_class: str, *, trust_remote_code: bool = False) -> list[str]:
    """The head parameters of ``auto_class`` built from ``config`` that the checkpoint in ``folder``
    lacks ([] when it has them all, or the class has no head). Without safetensors files the names
    are not readable cheaply: the config's ``architectures`` decide (a listed head class has its head).
    Weights missing inside the base model are left to transformers' own loading report."""
    model = _skeleton(config, auto_class, trust_remote_code)
    if getattr(model, "base_model", model) is model:  # AutoModel: the base model itself, no head
        return []
    prefix = getattr(model, "base_model_prefix", "") or ""
    # Tied parameters have several names; the checkpoint may hold any one of them.
    aliases: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    heads = [names for names in aliases.values() if head_names(names, prefix)]
    stored = stored_tensors(folder)
    if stored is None:
        listed = getattr(config, "architectures", None) or []
        return [] if not listed or type(model).__name__ in listed else [names[0] for names in heads]
    return [names[0] for names in heads if not any(name in stored for name in names)]


def missing_head_error(keys: list[str], model: str, task: str) -> MissingHeadError:
    """The error for a checkpoint that lacks ``keys`` of the ``task`` head: what is missing, which
    model, and the recipe key to add."""
    shown = ", ".join(keys[:4]) + (f" (and {len(keys) - 4} more)" if len(keys) > 4 else "")
    verb = "is" if len(keys) == 1 else "are"
    return MissingHeadError(
        f"{model} has no trained {task} head: {shown} {verb} not in the checkpoint, so the teacher would be a "
        f"random classifier (and so would the student). Add `{TEACHER_KEY}` to the recipe (the key "
        f"teacher.finetune) to fine-tune a teacher on the recipe's train split first, or start from a checkpoint "
        f"fine-tuned for {task}.")
