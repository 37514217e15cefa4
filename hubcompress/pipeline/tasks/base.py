"""What a task is to the pipeline: one :class:`TaskSpec` per task name, registered in :data:`TASKS`.

Every stage reads the task through its entry, never through the task's name: the data loader,
how texts become batches (and training labels), the loss, which outputs the metrics read and how
they become one row per example, the quality metrics and the primary one the gate holds, how an
int8 file is compared with the fp32 student, and the card's pipeline tag.

Adding a task is one file in this package that calls :func:`register_task`, an export entry in
``exporters.onnx.model_configs`` (its outputs) and, for serving, its post-processing.

Example:
    >>> from hubcompress.pipeline.tasks import TASKS
    >>> spec = TASKS["text-classification"]
    >>> spec.auto_class, spec.outputs, spec.primary_metric, spec.agreement
    ('AutoModelForSequenceClassification', ('logits',), 'accuracy', 'argmax')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from ...pooling import Pooling
from ..batches import Encoded

if TYPE_CHECKING:
    from ..context import RunContext

# One row per example: a fixed-shape array for every example (logits, an embedding), or per-example
# arrays of their own length (a token classifier's per-word logits).
Rows = Sequence[np.ndarray]
# (model outputs by name, the batch fed to the model, the batch's row indices, its Encoded, pooling)
RowsFn = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray], Sequence[int], Encoded, "Pooling | None"],
                  list[np.ndarray]]
# (rows of one model by split, the teacher's rows by split, the run) -> metric name -> value
QualityFn = Callable[[dict[str, Any], dict[str, Any], "RunContext"], dict[str, Any]]
# (tokenizer, a dataset or text set, max_length) -> its batches
EncodeFn = Callable[[Any, Any, int], Encoded]


def forward_only(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A task without labels: the forward feeds the distillers' hooks, whose losses are the whole objective."""
    model(**batch)
    return torch.zeros((), device=batch["input_ids"].device, requires_grad=True)


def labelled_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The transformers head's own loss on the batch's ``labels``."""
    return model(**batch).loss


def encode_texts(tokenizer: Any, dataset: Any, max_length: int) -> Encoded:
    """Texts (and text pairs and class labels, when the dataset has them) tokenised once."""
    return Encoded(tokenizer, dataset.texts, labels=getattr(dataset, "labels", None),
                   text_pairs=getattr(dataset, "text_pairs", None), max_length=max_length)


def load_text_data(ctx: RunContext) -> Any:
    """The recipe's data as texts and class labels (:func:`hubcompress.pipeline.data.load_task_data`)."""
    from ..data import load_task_data

    label2id = None
    if ctx.task.needs_labels and not ctx.missing_head:
        # From config.json, not the loaded teacher: the data is checked before any weights load. A base
        # model's config names no classes (or transformers' two LABEL_i): its head takes the data's.
        label2id = {str(k): int(v) for k, v in (getattr(ctx.model_config, "label2id", None) or {}).items()}
    return load_task_data(ctx.recipe.data, base_dir=ctx.recipe_dir, label2id=label2id or None,
                          seed=ctx.recipe.training.seed, need_train=ctx.needs_train_split)


TRACE_TEXTS = ("hubcompress traces the model on a short batch.", "A second, padded row.")


def trace_texts(ctx: RunContext) -> dict[str, torch.Tensor]:
    """The batch speedup traces the model on: two short texts, the second padded."""
    return dict(ctx.tokenizer(list(TRACE_TEXTS), padding=True, return_tensors="pt"))


def latency_texts(ctx: RunContext, size: int, seq: int) -> dict[str, torch.Tensor]:
    """``size`` eval texts padded (or cut) to ``seq`` tokens: the batch latencies are measured on."""
    texts = [ctx.data.eval.texts[i % len(ctx.data.eval)] for i in range(size)]
    return dict(ctx.tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="pt"))


def stacked(rows: Rows) -> np.ndarray:
    """Per-example rows as one array (n, ...) when they share a shape.

    Example:
        >>> stacked([np.zeros(2), np.ones(2)]).shape
        (2, 2)
    """
    return rows if isinstance(rows, np.ndarray) else np.stack(list(rows))


def flat(rows: Rows) -> np.ndarray:
    """Every row's vectors (along its last axis) in one 2-D array: what parity compares.

    Example:
        >>> flat([np.zeros((3, 2)), np.ones((1, 2))]).shape
        (4, 2)
    """
    return np.concatenate([np.reshape(np.asarray(r), (-1, np.shape(r)[-1])) for r in rows])


@dataclass(frozen=True)
class TaskSpec:
    """One task, as every stage sees it.

    Args:
        name: the recipe's ``task`` and the card's ``pipeline_tag``.
        auto_class: the transformers Auto class that loads the model with the task's head.
        outputs: the model outputs the metrics read, as named in the model's output and the ONNX
            file; the first is the one the parity report and the consumer check compare.
        row_name: what one row of the metrics is called in the report.
        rows: model outputs -> one row per example (see :data:`RowsFn`), the same for PyTorch and
            an exported file.
        quality: rows -> metrics (see :data:`QualityFn`); ``primary_metric`` is the one
            ``validation.max_metric_drop`` holds against the teacher.
        agreement: how an int8 file is held to the fp32 student: ``argmax`` (rows' argmax over the
            last axis agree) or ``cosine`` (mean cosine of the rows).
        loss: the task loss on a training batch (:func:`forward_only` when there is none).
        has_task_loss: False: training needs a distiller.
        needs_labels: the data must give labels (and a base model lacks the head).
        label_key: the recipe's ``data`` key that names the labels' column (``label_column``;
            ``tags_column`` for word tags, ``answers_column`` for answer spans).
        distill_head: module whose output is distilled with KL besides the layers; a tuple names
            one per architecture (the first the model has is taken).
        predictions: (the run, the eval rows) -> (predicted class ids, true class ids), one per thing the
            task classifies (a text, a word): what the teacher stage holds to the majority class.
        distill_method: the ``apply_method`` on the head's output: ``kl`` (over its last axis, the
            classes) or ``kl_seq`` (over the positions: a span head's start / end logits).
        pooled: rows pool token vectors, so they need the folder's Pooling.
        load_data: the run -> its data (``train``, ``eval``, ``name``, ``dataset_id``, ...); every
            split has ``texts`` (strings: latency and the consumer check feed them).
        encode: tokenises a split or text set into batches (and their training labels).
        finetunes_teacher: a ``teacher`` section may fine-tune the head (gated on accuracy over the
            majority class).
        parity: (student rows, an exported file's rows, row_name) -> the parity entry
            (``{row_name: {max_abs_diff, mean_abs_diff}, argmax_agreement}``), for rows that are not
            plain logits or embeddings; None: :func:`hubcompress.pipeline.metrics.parity`.
        plain_text: learns from texts alone (a language model): ``data.label_column`` is ignored and
            ``data.distill_texts`` may replace the train split.
        hidden_refusal: why ``pruning.hidden`` is refused for the task (empty: it is not).
        against_teacher: metrics measured against the teacher (left out of the teacher's own row,
            where they would only say 1).
        modality: what the model reads: ``text`` (the folder's tokenizer) or ``image`` (its image
            processor); ``ctx.tokenizer`` is that preprocessor.
        trace_inputs: the run -> the batch speedup traces the model on.
        latency_inputs: (the run, batch size, sequence length) -> a batch of eval inputs for latencies.
        consumer_check: validate loads the folder in a process without hubcompress and compares it with
            the ONNX file (it feeds eval texts, or eval images for the image modality).
    """

    name: str
    auto_class: str
    outputs: tuple[str, ...]
    row_name: str
    rows: RowsFn
    quality: QualityFn
    primary_metric: str
    agreement: Literal["argmax", "cosine"]
    loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    has_task_loss: bool
    needs_labels: bool
    distill_head: str | tuple[str, ...] | None
    pooled: bool = False
    load_data: Callable[[RunContext], Any] = load_text_data
    encode: EncodeFn = encode_texts
    finetunes_teacher: bool = False
    label_key: str = "label_column"
    against_teacher: tuple[str, ...] = ()
    modality: Literal["text", "image"] = "text"
    trace_inputs: Callable[[RunContext], dict[str, torch.Tensor]] = trace_texts
    latency_inputs: Callable[[RunContext, int, int], dict[str, torch.Tensor]] = latency_texts
    consumer_check: bool = True
    parity: Callable[[Rows, Rows, str], dict[str, Any]] | None = None
    plain_text: bool = False
    hidden_refusal: str = ""
    distill_method: str = "kl"
    predictions: Callable[[Any, Rows], tuple[np.ndarray, np.ndarray]] = \
        lambda ctx, rows: (stacked(rows).argmax(-1), np.asarray(ctx.data.eval.labels))

    @property
    def onnx_output(self) -> str:
        """The output the consumer check and the fp32 parity compare."""
        return self.outputs[0]

    @property
    def pipeline_tag(self) -> str:
        return self.name

    def labelled(self, data: Any) -> bool:
        """The recipe's ``data`` section names the labels this task trains on."""
        return data is not None and getattr(data, self.label_key, None) is not None


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task (the recipe's ``task`` key accepts every registered name)."""
    TASKS[spec.name] = spec
    return spec
