"""What every stage reads: the recipe, the output folder, the run state, and the model, tokenizer,
teacher and data, each loaded once and only when a stage asks (a resumed run that only has the
card left to write never loads the data).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import HubcompressError
from ..hub import resolve_model_source
from ..pooling import Pooling
from ..recipe import Recipe
from .batches import Encoded
from .state import RunState
from .tasks import TASKS

logger = logging.getLogger(__name__)


@dataclass
class RunContext:
    recipe: Recipe
    recipe_yaml: str  # the resolved recipe, as run
    recipe_dir: Path | None  # relative data paths resolve against it
    source: str  # hub id or folder, as given
    output: Path
    state: RunState
    progress: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    push_to_hub: str | None = None  # overrides the recipe's push.repo_id
    stash: dict[str, Any] = field(default_factory=dict)  # in-memory hand-over between stages of one process

    @property
    def repo_id(self) -> str | None:
        return self.push_to_hub or self.recipe.push.repo_id

    def data_ids(self) -> dict[str, str]:
        """How the card names the eval data."""
        return {"name": self.data.name, "id": self.data.dataset_id, "split": self.recipe.data.eval_split}

    @property
    def revision(self) -> str | None:
        return self.recipe.model.revision if self.recipe.model else None

    @property
    def task(self) -> Any:
        return TASKS[self.recipe.task]

    @functools.cached_property
    def folder(self) -> Path:
        return resolve_model_source(self.source, revision=self.revision)

    @functools.cached_property
    def pooling(self) -> Pooling | None:
        """How the base model makes sentence embeddings (its sentence-transformers modules), for a
        task whose rows pool; ``None`` for one that does not (it reads no file then)."""
        return Pooling.from_folder(self.folder) if self.task.pooled else None

    @property
    def base_model_id(self) -> str:
        """The hub id the card names as base model: the recipe's ``card.base_model``, else the id
        the run was given (a folder's name when it was a folder)."""
        if self.recipe.card.base_model:
            return self.recipe.card.base_model
        return Path(self.source).name if Path(self.source).expanduser().is_dir() else self.source

    @functools.cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.folder, trust_remote_code=self._trust_remote_code)

    @property
    def _trust_remote_code(self) -> bool:
        return bool(self.recipe.model and self.recipe.model.trust_remote_code)

    def load_base(self) -> nn.Module:
        """A fresh copy of the original model, in eval mode."""
        import transformers

        cls = getattr(transformers, self.task.auto_class)
        try:
            model = cls.from_pretrained(self.folder, trust_remote_code=self._trust_remote_code)
        except (OSError, ValueError) as error:
            raise HubcompressError(f"cannot load {self.source} as {self.task.auto_class} for task {self.recipe.task}: "
                                   f"{str(error).splitlines()[0]}") from error
        return model.eval()

    @functools.cached_property
    def teacher(self) -> nn.Module:
        return self.load_base().requires_grad_(False)

    @functools.cached_property
    def data(self) -> Any:
        from .data import load_task_data

        if self.recipe.data is None:
            raise HubcompressError("this stage needs evaluation data: add a 'data' section to the recipe.")
        label2id = None
        if self.task.needs_labels:
            label2id = {str(k): int(v) for k, v in (getattr(self.teacher.config, "label2id", None) or {}).items()}
        return load_task_data(self.recipe.data, base_dir=self.recipe_dir, label2id=label2id or None,
                              seed=self.recipe.training.seed, need_train=self.needs_train_split)

    @property
    def needs_train_split(self) -> bool:
        from .compress import needs_training

        # The embedding probe fits on the train split; compression trains on it.
        return needs_training(self.recipe) or (not self.task.needs_labels and self.recipe.data is not None
                                                and self.recipe.data.label_column is not None)

    def encoded(self, split: str) -> Encoded | None:
        """The split (``train`` or ``eval``), tokenised once per run."""
        key = f"encoded:{split}"
        if key not in self.stash:
            dataset = getattr(self.data, split)
            self.stash[key] = None if dataset is None else Encoded(
                self.tokenizer, dataset.texts, labels=dataset.labels, text_pairs=dataset.text_pairs,
                max_length=self.recipe.data.max_length)
        return self.stash[key]

    def student(self) -> nn.Module:
        """The compressed model as written to the output folder (reloading checks the checkpoint)."""
        if "student" not in self.stash:
            from ..checkpoint import from_pretrained

            self.stash["student"] = from_pretrained(self.output).eval()
        return self.stash["student"]
