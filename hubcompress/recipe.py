"""Recipes: one YAML file says what `hubcompress run` does. A strict pydantic schema (unknown keys
rejected), with every error naming the file, the line and the key.

Example:
    >>> recipe = parse_recipe("task: feature-extraction\\nmodel: {id: sentence-transformers/all-MiniLM-L6-v2}\\n")
    >>> recipe.task, recipe.export.int8
    ('feature-extraction', 'dynamic')
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import RecipeError

PRUNERS = ("LevelPruner", "L1NormPruner", "L2NormPruner", "FPGMPruner", "SlimPruner", "TaylorPruner",
           "MovementPruner")
QUANTIZERS = ("QATQuantizer", "PtqQuantizer", "LsqQuantizer", "LsqPlusQuantizer", "DoReFaQuantizer", "BNNQuantizer")
TRAINING_PRUNERS = ("TaylorPruner", "SlimPruner", "MovementPruner")  # they measure importance while training
DISTILLERS = ("DynamicLayerwiseDistiller", "Adaptive1dLayerwiseDistiller")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Strict):
    id: str = Field(description="hub id (org/name) or a local folder")
    revision: str | None = None
    trust_remote_code: bool = False


class DataSection(_Strict):
    dataset: str | None = None
    # a hub dataset's configuration (datasets' ``name``: "sst2" of nyu-mll/glue) and revision
    config: str | None = None
    revision: str | None = None
    files: dict[str, str | list[str]] | None = None  # split -> paths of csv / json / jsonl / parquet
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str | None = "label"
    train_split: str = "train"
    eval_split: str = "validation"
    max_length: int = Field(128, ge=8, le=4096)
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    # What the student is distilled on instead of the train split (which still fits the embedding
    # probe): built-in text sets (`general`) or text files; see hubcompress/pipeline/text_sets.py.
    distill_texts: str | list[str] | None = None
    # token-classification: a list of words and a list of tags (names or ids) per row.
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    # question-answering (SQuAD format): answers is {text: [...], answer_start: [...]}; a context longer
    # than max_length is cut into windows that overlap by doc_stride tokens.
    question_column: str = "question"
    context_column: str = "context"
    answers_column: str = "answers"
    doc_stride: int = Field(32, ge=0)
    # image-classification: the column holding the images (a hub dataset's); data.files may name image
    # folders, one subfolder per class.
    image_column: str = "image"

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if self.dataset and self.files:
            raise ValueError("give either 'dataset' (a hub dataset) or 'files' (local files), not both")
        return self


class Schedule(_Strict):
    kind: Literal["agp", "linear"] = "agp"
    interval_steps: int = Field(ge=1)
    total_times: int = Field(ge=1)


def _check_name(value: str, known: tuple[str, ...], what: str) -> str:
    if value not in known:
        near = difflib.get_close_matches(value, known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown {what} {value!r}{hint}; known: {', '.join(known)}")
    return value


def _task(name: str) -> Any:
    # The task registry imports torch: read it when a recipe is checked, not when this module loads.
    from .pipeline.tasks import TASKS

    return TASKS[name]


def _task_name(value: str) -> str:
    from .pipeline.tasks import TASKS

    return _check_name(value, tuple(sorted(TASKS)), "task")


def _check_drop_layers(value: Any) -> Any:
    """``pruning.drop_layers``: a list of distinct layer indices, a count >= 1, or a fraction in (0, 1)."""
    if value is None:
        return value
    if isinstance(value, bool):
        raise ValueError("give layer indices ([1, 3]), a count of layers (2) or a fraction of them (0.5), not a bool")
    if isinstance(value, list):
        if not value or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in value) \
                or len(set(value)) != len(value):
            raise ValueError(f"{value}: layer indices must be distinct integers >= 0 (layer 0 is the first)")
        return value
    if isinstance(value, int) and value < 1:
        raise ValueError(f"{value}: a count of layers to drop is at least 1")
    if isinstance(value, float) and not 0 < value < 1:
        raise ValueError(f"{value}: a fraction of layers to drop is between 0 and 1 (exclusive)")
    return value


class PruningSection(_Strict):
    pruner: str = "TaylorPruner"
    config_list: list[dict[str, Any]] | None = None
    heads: float | None = Field(None, ge=0, le=1)  # shortcuts for transformer_config_list
    ffn: float | None = Field(None, ge=0, le=1)
    hidden: float | None = Field(None, ge=0, le=1)
    # Depth pruning (hubcompress/pipeline/depth.py): whole layers dropped before training, either the
    # listed original indices ([1, 3]), or a count (3) / fraction (0.5) chosen by block influence.
    drop_layers: list[int] | int | float | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule | None = None

    _name = field_validator("pruner")(lambda cls, v: _check_name(v, PRUNERS, "pruner"))
    _drop = field_validator("drop_layers", mode="before")(lambda cls, v: _check_drop_layers(v))

    @model_validator(mode="after")
    def _something(self) -> PruningSection:
        if self.config_list is None and not any((self.heads, self.ffn, self.hidden, self.drop_layers)):
            raise ValueError("prunes nothing: give a config_list, heads / ffn / hidden ratios, or drop_layers")
        return self

    @property
    def prunes_width(self) -> bool:
        """Whether a pruner runs (a config list or width ratios), not only the layer drop."""
        return self.config_list is not None or any((self.heads, self.ffn, self.hidden))


class QuantizationSection(_Strict):
    quantizer: str = "QATQuantizer"
    config_list: list[dict[str, Any]] | None = None
    args: dict[str, Any] = Field(default_factory=dict)

    _name = field_validator("quantizer")(lambda cls, v: _check_name(v, QUANTIZERS, "quantizer"))


class EmbeddingLoss(_Strict):
    """Weights of the losses between the student's and the teacher's sentence embeddings (pooled as
    the model folder says), added to the distiller's layerwise losses; 0 leaves one out."""

    cosine: float = Field(0.0, ge=0)  # 1 - cos(student, teacher) per text
    relational: float = Field(0.0, ge=0)  # MSE of the batch's text-to-text cosine similarities


class DistillationSection(_Strict):
    distiller: str = "DynamicLayerwiseDistiller"
    config_list: list[dict[str, Any]] | None = None
    teacher: str | None = None  # default: a frozen copy of the original model
    args: dict[str, Any] = Field(default_factory=dict)
    embedding_loss: EmbeddingLoss | None = None  # feature-extraction only

    _name = field_validator("distiller")(lambda cls, v: _check_name(v, DISTILLERS, "distiller"))


class TrainingSection(_Strict):
    steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when torch sees a GPU
    # Off by default: with dropout the student cannot match even an unpruned teacher exactly, and
    # that noise dominates a distillation loss.
    dropout: bool = False
    # The weights are float32 whatever the checkpoint stores (float16 matmuls on a CPU are many times
    # slower, and fp16 weights lose small updates); bfloat16 / float16 train with autocast (mixed
    # precision: float32 weights, half-precision matmuls), meant for GPUs. auto: float32.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainingSection:
        if self.steps and self.epochs:
            raise ValueError("give 'steps' or 'epochs', not both")
        return self


class FinetuneSection(_Strict):
    """How the teacher is fine-tuned on the recipe's train split with the task loss (its own budget)."""

    steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> FinetuneSection:
        if self.steps and self.epochs:
            raise ValueError("give 'steps' or 'epochs', not both")
        if not (self.steps or self.epochs):
            raise ValueError("give 'epochs' (passes over the train split) or 'steps' (batches), e.g. {epochs: 1}")
        return self


class TeacherSection(_Strict):
    """A teacher made in the run: for a base model that lacks the task's head (transformers would
    give it a random one), fine-tuned before compression; the student starts from it and distils from it."""

    finetune: FinetuneSection


class SpeedupSection(_Strict):
    enabled: bool = True


class ExportSection(_Strict):
    onnx: bool = True
    int8: Literal["none", "dynamic", "static", "qat"] = "dynamic"
    opset: int = Field(17, ge=13, le=21)
    # TorchScript's graphs of BERT-family models ran 1.2-1.4x faster in ONNX Runtime than dynamo's
    # (benchmarks/RESULTS.md); the other exporter is the fallback.
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    optimize: bool = False
    # OpenVINO IR converted from the fp32 ONNX file: true writes openvino/openvino_model.xml, int8 also
    # openvino/openvino_model_qint8_quantized.xml (NNCF, calibrated on the recipe's data). Needs the
    # openvino extra; on 2 cores its int8 of the compressed demo ran 1.3x (batch 1) to 1.7x (batch 8)
    # faster than ONNX Runtime's, and closer to fp32 (README, "OpenVINO").
    openvino: Literal["int8"] | bool = False

    @model_validator(mode="after")
    def _openvino_needs_onnx(self) -> ExportSection:
        if self.openvino and not self.onnx:
            raise ValueError("openvino is converted from the ONNX file: set onnx: true, or openvino: false")
        return self


class ValidationSection(_Strict):
    max_metric_drop: float | None = Field(None, ge=0)  # points of the task metric vs the teacher
    min_cosine: float | None = Field(None, ge=-1, le=1)  # embeddings: mean cosine to the teacher
    max_abs_diff_onnx: float = Field(1e-3, gt=0)  # the fp32 ONNX file against the PyTorch student
    # The int8 file against the fp32 student: argmax agreement (classifiers) or mean cosine (embeddings).
    min_int8_agreement: float = Field(0.95, ge=0, le=1)
    # Embeddings, on texts that are not the distillation data (default: the built-in `dialogue` set):
    # Spearman of all pairwise cosine similarities with the teacher's, and the share of each text's
    # 10 nearest neighbours the teacher also finds.
    fidelity_texts: str | list[str] | None = None
    max_fidelity_texts: int = Field(400, ge=3)
    min_similarity_spearman: float | None = Field(None, ge=-1, le=1)
    min_topk_overlap: float | None = Field(None, ge=0, le=1)
    # Classifiers: the teacher's accuracy must beat always answering the eval split's most frequent
    # class by this many points, checked before compression (a random head scores about the baseline).
    min_teacher_margin: float = Field(5.0, ge=0, le=100)


class CardSection(_Strict):
    base_model: str | None = None  # hub id of the original; default: the model id the run was given
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    language: list[str] | str | None = None


class PushSection(_Strict):
    repo_id: str | None = None
    private: bool = False
    create_pr: bool = False
    revision: str | None = None


class Recipe(_Strict):
    """The whole recipe, as run (saved next to the artifacts)."""

    # Where it was read from, (file name, text), so a later stage can name the file and line of a key.
    _source: tuple[str, str] | None = PrivateAttr(default=None)

    model: ModelSection | None = None  # the CLI's positional argument overrides it
    task: str  # a name in hubcompress.pipeline.tasks.TASKS
    data: DataSection | None = None
    teacher: TeacherSection | None = None
    pruning: PruningSection | None = None
    quantization: QuantizationSection | None = None
    distillation: DistillationSection | None = None
    training: TrainingSection = Field(default_factory=TrainingSection)
    speedup: SpeedupSection = Field(default_factory=SpeedupSection)
    export: ExportSection = Field(default_factory=ExportSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    card: CardSection = Field(default_factory=CardSection)
    push: PushSection = Field(default_factory=PushSection)

    _task = field_validator("task")(lambda cls, v: _task_name(v))

    @model_validator(mode="after")
    def _coherent(self) -> Recipe:
        task, pruning = _task(self.task), self.pruning
        trains = bool(self.distillation or self.quantization
                      or (pruning and pruning.prunes_width and (pruning.pruner in TRAINING_PRUNERS or pruning.schedule)))
        if pruning and pruning.hidden and task.hidden_refusal:
            raise ValueError(f"pruning.hidden: {task.hidden_refusal}")
        if trains and self.data is None:
            raise ValueError("this recipe trains or calibrates (distillation, quantization, a training pruner or a "
                             "schedule): add a 'data' section with a train split")
        if pruning and pruning.drop_layers is not None and not isinstance(pruning.drop_layers, list) \
                and self.data is None:
            raise ValueError("pruning.drop_layers: a count or fraction of layers is chosen by their importance on the "
                             "recipe's text: add a 'data' section with a train split, or list the layer indices")
        if trains and not task.has_task_loss and self.distillation is None:
            raise ValueError(f"{self.task} has no task loss to train on: add a 'distillation' section "
                             "(the original model's outputs are the target), or use a one-shot pruner without schedule")
        embedding_only = {"distillation.embedding_loss": self.distillation and self.distillation.embedding_loss,
                          # A language model's labels are its tokens: any text set trains it.
                          "data.distill_texts": self.data and self.data.distill_texts and not task.plain_text,
                          **{f"validation.{key}": getattr(self.validation, key) is not None
                             for key in ("fidelity_texts", "min_similarity_spearman", "min_topk_overlap")}}
        misplaced = [key for key, given in embedding_only.items() if given]
        if misplaced and not task.pooled:
            raise ValueError(f"{', '.join(misplaced)}: only for task feature-extraction (sentence embeddings; "
                             "distill_texts has no labels for a classifier's task loss); remove it")
        gates = any(getattr(self.validation, key) is not None
                    for key in ("max_metric_drop", "min_cosine", "min_similarity_spearman", "min_topk_overlap"))
        if gates and self.data is None:
            raise ValueError("validation gates compare with the teacher on evaluation data: add a 'data' section")
        if self.export.int8 == "qat" and self.quantization is None:
            raise ValueError("export.int8: qat needs a 'quantization' section to take the scales from")
        if self.teacher and not task.finetunes_teacher:
            raise ValueError(f"teacher.finetune trains a task head with the task loss; {self.task} has none: "
                             "remove the 'teacher' section (the original model is the teacher)")
        if self.teacher and not task.labelled(self.data):
            raise ValueError("teacher.finetune trains on labelled data: add a 'data' section with a train split and "
                             f"data.{task.label_key}")
        return self


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest part of it that exists)."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    """Parse and validate recipe YAML text; errors name ``source``, the line and the key."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of sections (model, task, data, pruning, ...).")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            key = ".".join(str(p) for p in loc) or "(top level)"
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                parent = _model_at(loc[:-1])
                near = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1) if parent else []
                message = "unknown key" + (f"; did you mean {near[0]!r}?" if near else "") + (
                    f" Allowed: {', '.join(parent.model_fields)}." if parent else "")
            lines.append(f"{source}:{_line_of(root, loc) or '?'}: {key}: {message}")
        raise RecipeError("\n".join(lines)) from None
    recipe._source = (source, text)
    return recipe


def located(recipe: Recipe, loc: tuple[Any, ...], message: str) -> RecipeError:
    """A RecipeError for the key at ``loc`` (e.g. ``("pruning", "config_list", 0, "op_names")``),
    as ``file:line: key: message`` when the recipe was read from a file. A recipe made in code from
    a one-line dump (``<resolved recipe>``) has no line worth naming: it gets ``key: message``.

    Example:
        >>> text = "task: feature-extraction\\npruning:\\n  pruner: L1NormPruner\\n  config_list:\\n    - {op_names: [x]}\\n"
        >>> r = parse_recipe(text, "r.yaml")
        >>> str(located(r, ("pruning", "config_list", 0, "op_names"), "no module named 'x'"))
        "r.yaml:5: pruning.config_list[0].op_names: no module named 'x'"
        >>> str(located(parse_recipe('{"task": "feature-extraction"}', "<dump>"), ("task",), "no"))
        'task: no'
    """
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc if p is not None).lstrip(".")
    if recipe._source is None or (recipe._source[0].startswith("<") and "\n" not in recipe._source[1].strip()):
        return RecipeError(f"{key}: {message}")
    source, text = recipe._source
    line = _line_of(yaml.compose(text), tuple(p for p in loc if p is not None))
    return RecipeError(f"{source}:{line or '?'}: {key}: {message}")


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = Recipe
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        candidates = [a for a in getattr(field.annotation, "__args__", (field.annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        model = candidates[0]
    return model


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe file; `hubcompress recipe init` writes a starter.")
    if path.is_dir():
        raise RecipeError(f"{path}: is a folder; pass the recipe YAML file inside it (e.g. {path}/recipe.yaml).")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise RecipeError(f"{path}: cannot read it ({error.strerror or error}).") from None
    # NUL bytes first: a binary file (a checkpoint, an archive) is rarely valid UTF-8 either, and
    # "binary" says more than "byte 128 cannot be decoded".
    if b"\x00" in raw:
        raise RecipeError(f"{path}: holds NUL bytes, so it is a binary file, not a YAML recipe; pass the recipe file "
                          "(`hubcompress recipe init` writes a starter).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecipeError(f"{path}: not a UTF-8 text file (byte {error.start} cannot be decoded); a recipe is "
                          "YAML text: save it as UTF-8, or check that this is the recipe and not another file.") from None
    if not text.strip():
        raise RecipeError(f"{path}: is empty; a recipe names at least its task (`hubcompress recipe init` writes a "
                          "starter).")
    return parse_recipe(text, str(path))


STARTER = """\
# hubcompress recipe: `hubcompress recipe check THIS_FILE` validates it.
model:
  id: sentence-transformers/all-MiniLM-L6-v2   # a hub id or a local folder
  revision: null                                # a branch, tag or commit on the hub
task: feature-extraction                        # or text-classification
data:
  files: {train: data/train.jsonl, validation: data/validation.jsonl}   # csv / json / jsonl / parquet
  text_column: text
  label_column: null                            # set it for text-classification
  max_length: 128
pruning:
  pruner: TaylorPruner                          # Level/L1/L2/FPGM/Slim/Taylor/Movement
  heads: 0.5                                    # whole attention heads per layer
  ffn: 0.5                                      # FFN neurons per layer
  args: {training_steps: 100}
  schedule: {kind: agp, interval_steps: 50, total_times: 10}
distillation:
  distiller: DynamicLayerwiseDistiller          # the teacher is a frozen copy of the original model
# teacher:                                      # text-classification from a base model (no trained head):
#   finetune: {epochs: 1, lr: 5.0e-5, batch_size: 32}   # fine-tune a teacher on the train split first
training:
  steps: 600
  lr: 5.0e-5
  batch_size: 32
  seed: 0
  dtype: auto                                   # float32; bfloat16 / float16: mixed precision (autocast)
export:
  onnx: true
  int8: dynamic                                 # none / dynamic / static / qat
validation:
  min_cosine: 0.9                               # gate: nothing is pushed below this
card:
  license: apache-2.0
  tags: [pruned, int8]
push:
  repo_id: null                                 # or org/name; --push-to-hub overrides it
  create_pr: false
"""
