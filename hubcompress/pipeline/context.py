"""What every stage reads: the recipe, the output folder, the run state, and the model, tokenizer,
teacher and data, each loaded once and only when a stage asks (a resumed run that only has the
card left to write never loads the data).

A fresh run first checks the inputs that are cheap to check (the model folder's config and
tokenizer files, the ONNX export support of its model type, the recipe's data), so bad input
ends the run before any stage writes a file, not after the model is published half-way.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelSourceError, RecipeError, UnsupportedModelError
from ..hub import resolve_model_source
from ..pooling import Pooling
from ..recipe import Recipe
from .batches import Encoded
from .heads import head_names, missing_head, missing_head_error
from .launch import Launch
from .precision import Precision, dtype_name, resolve_precision
from .state import RunState
from .text_sets import DEFAULT_FIDELITY_TEXTS, TextSet, check_text_set_paths, load_text_set
from .stored_weights import stored_float_dtype, stored_tensors
from .tasks import TASKS

logger = logging.getLogger(__name__)


# What transformers raises for a folder whose files are missing, truncated or of another model
# (safetensors' own error included): the input is wrong, not the stage.
_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, RuntimeError, EOFError)
try:
    from safetensors import SafetensorError

    _LOAD_ERRORS += (SafetensorError,)
except ImportError:  # pragma: no cover - transformers depends on safetensors
    pass


# Any one of these makes AutoTokenizer read the model's own tokenizer; with none of them transformers
# builds an empty one that maps every word to [UNK] (and the run would "succeed" on garbage).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def _named(source: str, folder: Path) -> str:
    """How a message names the model: the hub id and the folder it was downloaded to, or the folder once."""
    return str(folder) if Path(source).expanduser() == Path(folder) else f"{source} ({folder})"


@contextlib.contextmanager
def _model_files(source: str, folder: Path, what: str, *, auto_class: str | None = None,
                 trust_remote_code: bool = False) -> Iterator[None]:
    try:
        yield
    except _LOAD_ERRORS as error:
        files = ", ".join(sorted(p.name for p in Path(folder).iterdir())[:12]) if Path(folder).is_dir() else "none"
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        mismatched = _mismatched_weights(Path(folder), auto_class, trust_remote_code) \
            if auto_class and "mismatched_sizes" in str(error) else []
        if mismatched:
            more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
            raise ModelSourceError(
                f"cannot load {_named(source, folder)} as {what}: its config.json does not describe its weights: "
                f"{'; '.join(mismatched[:3])}{more}. Fix config.json (the widths it names, such as "
                "hidden_size or intermediate_size), or re-save the model with save_pretrained.") from None
        if Path(folder).is_dir():
            stored_tensors(folder)  # raises, naming the file, when a weights file is not whole
        raise ModelSourceError(
            f"cannot load {_named(source, folder)} as {what}: {type(error).__name__}: {detail}. Its files: {files}. "
            "Re-download or re-save the model (a file may be truncated), or pass another folder or hub id.") from None


def _mismatched_weights(folder: Path, auto_class: str, trust_remote_code: bool) -> list[str]:
    """'name is [64, 32] in model.safetensors but [48, 32] by config.json' for each weight whose shape
    the config contradicts (transformers itself only says "look at the report" it logged)."""
    try:
        import transformers
        from safetensors import safe_open

        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = getattr(transformers, auto_class).from_config(config, trust_remote_code=trust_remote_code)
        expected = {name: list(t.shape) for name, t in model.state_dict().items()}
        prefix = getattr(model, "base_model_prefix", "") or ""
        out = []
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), "pt") as weights:
                for key in weights.keys():
                    # A base model's keys lack the head model's prefix ("encoder..." vs "bert.encoder...").
                    name = next((k for k in (key, f"{prefix}.{key}", key.removeprefix(f"{prefix}.")) if k in expected),
                                None)
                    shape = list(weights.get_slice(key).get_shape())
                    if name is not None and expected[name] != shape:
                        out.append(f"{key} is {shape} in {file.name} but {expected[name]} by config.json")
        return out
    except Exception:  # noqa: BLE001 - only a better message; the caller reports the original error
        return []


@dataclass
class Compressed:
    """What the compress stage hands speedup and a QAT export: the full-size compressed model, its
    pruning masks and the quantizer's calibration (scales, zero points, ranges)."""

    model: nn.Module
    masks: dict[str, Any]
    calibration: dict[str, Any]


@dataclass
class HandOver:
    """The results a stage hands the next in memory within one process. Each is also written to the
    output folder, and a resumed run rebuilds it from there when the stage that made it ran earlier."""

    compressed: Compressed | None = None
    student: nn.Module | None = None  # the shrunk model, as saved
    encoded: dict[str, Encoded | None] = field(default_factory=dict)  # tokenised splits and text sets


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
    handover: HandOver = field(default_factory=HandOver)  # in-memory results between stages of one process
    launch: Launch = field(default_factory=Launch)  # this process's rank, under torchrun / accelerate launch

    def __post_init__(self) -> None:
        if not self.state.stages:  # a fresh run; a resumed one checked its inputs when it started
            self.check_inputs()

    def check_inputs(self) -> None:
        """Fail on bad input before the first stage writes anything: the model folder's config and
        tokenizer files, ONNX support for its model type (when the recipe exports), the task head, the
        config lists, and the recipe's data (read now, and kept for the stages). Loads no weights.

        Raises:
            ModelSourceError: the folder lacks config.json or tokenizer files, or they cannot be read.
            UnsupportedModelError: the recipe exports to ONNX and no export config covers the model type.
            DataError: a data file, split, column or label is missing or wrong.
            MissingHeadError: the checkpoint lacks the task's head and the recipe has no ``teacher`` section.
            RecipeError, ConfigListError: a config list does not fit the model (the compressors are built
                on its skeleton, as ``recipe check`` does).
        """
        if self.task.modality == "text":
            self._check_tokenizer_files()
        config = self.model_config
        if self.recipe.export.onnx:
            from exporters.errors import UnsupportedModelType
            from exporters.onnx import get_export_config

            try:
                get_export_config(getattr(config, "model_type", None) or "", self.recipe.task, config)
            except UnsupportedModelType as error:
                raise UnsupportedModelError(
                    f"{_named(self.source, self.folder)} cannot be exported to ONNX: {error} Or set export.onnx: false "
                    "in the recipe to compress it without an ONNX file.") from None
        if self.missing_head and self.recipe.teacher is None:
            raise missing_head_error(self.missing_head, _named(self.source, self.folder), self.recipe.task)
        if self.recipe.pruning or self.recipe.quantization or self.recipe.distillation:
            from .check import build_compressors, model_skeleton

            build_compressors(self.recipe, model_skeleton(self.recipe, Path(self.folder)))  # config-list mistakes
        if self.recipe.data is not None:
            self.data  # noqa: B018 - read (and kept) now, so a bad file fails before any stage
        check_text_set_paths(self.recipe, self.recipe_dir)

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
    def model_config(self) -> Any:
        """The model's transformers config (config.json; no weights)."""
        import transformers

        if Path(self.folder).is_dir() and not (Path(self.folder) / "config.json").is_file():
            files = ", ".join(sorted(p.name for p in Path(self.folder).iterdir())[:12]) or "none"
            raise ModelSourceError(
                f"{_named(self.source, self.folder)} has no config.json, so it is not a transformers model folder (its "
                f"files: {files}). Pass the folder that holds config.json and the weights, or a hub id.")
        with _model_files(self.source, self.folder, "a transformers model (its config.json)"):
            return transformers.AutoConfig.from_pretrained(self.folder, trust_remote_code=self._trust_remote_code)

    def _check_tokenizer_files(self) -> None:
        folder = Path(self.folder)
        if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ModelSourceError(
                f"{_named(self.source, folder)} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); "
                "transformers would make an empty tokenizer that reads every word as unknown. Save the model's "
                "tokenizer into the folder (AutoTokenizer.from_pretrained(<base model>).save_pretrained(folder)), "
                "or pass the folder or hub id that has it.")

    @functools.cached_property
    def tokenizer(self) -> Any:
        """The model's preprocessor: its tokenizer, or for an image task its image processor."""
        from transformers import AutoImageProcessor, AutoTokenizer

        if self.task.modality == "image":
            with _model_files(self.source, self.folder, "an image processor (preprocessor_config.json)"):
                return AutoImageProcessor.from_pretrained(self.folder, trust_remote_code=self._trust_remote_code)
        self._check_tokenizer_files()
        with _model_files(self.source, self.folder, "a tokenizer"):
            tokenizer = AutoTokenizer.from_pretrained(self.folder, trust_remote_code=self._trust_remote_code)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            # GPT-2 has no padding token: batches pad with end-of-text (masked out), as transformers'
            # pipelines do; the published tokenizer and config.json keep it.
            logger.info("the tokenizer has no pad token: padding with its eos token %r", tokenizer.eos_token)
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    @property
    def _trust_remote_code(self) -> bool:
        return bool(self.recipe.model and self.recipe.model.trust_remote_code)

    @functools.cached_property
    def missing_head(self) -> list[str]:
        """The task head's parameters the checkpoint lacks, read from its file headers ([]: it has
        them, or the task has no head). Non-empty: a base model, whose head needs ``teacher.finetune``."""
        return missing_head(self.folder, self.model_config, self.task.auto_class,
                            trust_remote_code=self._trust_remote_code)

    @functools.cached_property
    def precision(self) -> Precision:
        """What the run computes in (``training.dtype``), with the dtype the checkpoint stores."""
        stored = stored_float_dtype(self.folder) or dtype_name(getattr(self.model_config, "dtype", None))
        return resolve_precision(self.recipe.training.dtype, self.device, stored and str(stored))

    def dtypes(self) -> dict[str, str | None]:
        """report.json's and the card's ``dtype``: what the checkpoint stores, what the run trained in
        (weights, autocast), and what the output folder's weights are stored in (None before speedup)."""
        return {**self.precision.to_dict(), "exported": stored_float_dtype(self.output)}

    @property
    def teacher_folder(self) -> Path:
        """Where the teacher stage saves the teacher it fine-tuned (bookkeeping: never published)."""
        return self.state.work / "teacher"

    @property
    def finetuned_teacher(self) -> bool:
        """Whether the teacher stage has saved a fine-tuned teacher (written atomically: there means whole)."""
        return (self.teacher_folder / "config.json").is_file()

    def load_base(self) -> nn.Module:
        """A fresh copy of the model the run starts from, in eval mode and in float32 (whatever the
        checkpoint stores): the fine-tuned teacher once the teacher stage saved one, else the original.

        Raises:
            MissingHeadError: transformers initialised the task head at random and the recipe has no
                ``teacher`` section (the check before the run reads safetensors headers; this one also
                covers ``pytorch_model.bin`` checkpoints).
        """
        import transformers

        folder = self.teacher_folder if self.finetuned_teacher else self.folder
        kwargs: dict[str, Any] = {"dtype": self.precision.weights, "trust_remote_code": self._trust_remote_code}
        if folder == self.folder and self.missing_head:
            kwargs.update(self._new_head_labels())
        cls = getattr(transformers, self.task.auto_class)
        with _model_files(self.source, folder, f"{self.task.auto_class} for task {self.recipe.task}",
                          auto_class=self.task.auto_class, trust_remote_code=self._trust_remote_code):
            model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
        random_head = sorted(head_names(info.get("missing_keys", ()), getattr(model, "base_model_prefix", "")))
        if random_head and self.recipe.teacher is None and model.base_model is not model:
            raise missing_head_error(random_head, _named(self.source, self.folder), self.recipe.task)
        if getattr(model.config, "pad_token_id", None) is None and getattr(self.tokenizer, "pad_token_id", None) is not None:
            model.config.pad_token_id = self.tokenizer.pad_token_id  # the eos padding above, said in config.json
        return model.eval()

    def _new_head_labels(self) -> dict[str, Any]:
        """The classes of a head the checkpoint lacks: the data's (a base model's config names none)."""
        data = self.data
        if data.label_names is None and not any(getattr(s, "labels", None) for s in (data.train, data.eval) if s):
            return {}  # a head without classes (question answering's start / end logits) keeps its shape
        names = data.label_names or [str(i) for i in range(1 + max(
            max(split.labels) for split in (data.train, data.eval) if split is not None and split.labels))]
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}}

    @functools.cached_property
    def teacher(self) -> nn.Module:
        return self.load_base().requires_grad_(False)

    @functools.cached_property
    def data(self) -> Any:
        """The recipe's data, loaded by the task's loader (every split has ``texts``)."""
        from .data_files import check_data_paths

        if self.recipe.data is None:
            raise RecipeError("this stage needs evaluation data: add a 'data' section to the recipe.")
        check_data_paths(self.recipe, self.recipe_dir)  # a missing file is named at its key in the recipe
        return self.task.load_data(self)

    @property
    def needs_train_split(self) -> bool:
        from .compress import needs_training
        from .depth import measures_depth

        # The embedding probe fits on the train split; compression trains on it (or ranks layers on it).
        return needs_training(self.recipe) or measures_depth(self.recipe) or (not self.task.needs_labels and self.recipe.data is not None
                                                and self.recipe.data.label_column is not None)

    def encoded(self, split: str) -> Encoded | None:
        """The split (``train`` or ``eval``) or text set (``distill``, ``fidelity``), tokenised once per
        run by the task's ``encode``."""
        cache = self.handover.encoded
        if split not in cache:
            dataset = getattr(self.data, split) if split in ("train", "eval") else getattr(self, f"{split}_texts")
            cache[split] = None if dataset is None else self.task.encode(self.tokenizer, dataset,
                                                                         self.recipe.data.max_length)
        return cache[split]

    @property
    def training_split(self) -> str:
        """What the compress stage trains on: ``distill`` (``data.distill_texts``) or the ``train`` split."""
        return "distill" if self.recipe.data and self.recipe.data.distill_texts else "train"

    @functools.cached_property
    def distill_texts(self) -> TextSet | None:
        """``data.distill_texts`` read (None: the student is distilled on the train split)."""
        data = self.recipe.data
        if data is None or not data.distill_texts:
            return None
        return load_text_set(data.distill_texts, text_column=data.text_column, base_dir=self.recipe_dir,
                             key="data.distill_texts")

    @functools.cached_property
    def fidelity_texts(self) -> TextSet | None:
        """The texts embedding fidelity is measured on: ``validation.fidelity_texts`` (default: the built-in
        ``dialogue`` set), at most ``validation.max_fidelity_texts``; None for a task that does not pool."""
        if not self.task.pooled:
            return None
        rules, data = self.recipe.validation, self.recipe.data
        texts = load_text_set(rules.fidelity_texts or DEFAULT_FIDELITY_TEXTS,
                              text_column=data.text_column if data else "text", base_dir=self.recipe_dir,
                              key="validation.fidelity_texts")
        return texts.sample(rules.max_fidelity_texts)

    def student(self) -> nn.Module:
        """The compressed model as written to the output folder (reloading checks the checkpoint)."""
        if self.handover.student is None:
            from ..checkpoint import from_pretrained

            self.handover.student = from_pretrained(self.output).eval()
        return self.handover.student
