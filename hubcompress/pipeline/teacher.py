"""The teacher stage, before compression in every classification run with data: make the teacher
(fine-tune it when the recipe has a ``teacher`` section), then check that it is worth distilling.

A base model (no trained head for the task) gets its head, and the rest of it, fine-tuned with the
task loss on the recipe's train split, in the compress stage's training loop with its own budget
(``teacher.finetune``) and progress bar. The result is saved in ``.hubcompress/teacher/`` (atomically,
with how it was made), so a rerun reloads it instead of training again; the compress stage starts
the student from it and distils from it.

Then the gate: the teacher's accuracy on the eval split must beat always answering the split's
most frequent class by ``validation.min_teacher_margin`` points, else the run stops with exit 1
before anything is compressed (a random head scores about that baseline, and so would its student).

Example:
    >>> majority_baseline([0, 2, 2, 1, 2])
    (2, 0.6)
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_dir
from ..compression.distributed import broadcast_module
from ..errors import GateFailedError
from ..recipe import FinetuneSection
from . import metrics
from .batches import Encoded
from .compress import Loop, TrainingLog, training_func
from .context import RunContext
from .tasks import TaskSpec
from .validate import torch_rows

logger = logging.getLogger(__name__)

MADE = "finetune.json"  # how the saved teacher was made, next to its weights


def majority_baseline(labels: Sequence[int]) -> tuple[int, float]:
    """The most frequent class of ``labels`` and the accuracy of always answering it: the best any
    model that ignores its input can score there."""
    label, count = collections.Counter(int(y) for y in labels).most_common(1)[0]
    return label, count / len(labels)


def finetune_model(model: nn.Module, train: Encoded, loop: Loop, task: TaskSpec, *, progress: bool,
                   device: torch.device) -> TrainingLog:
    """Train every weight of ``model`` with the task loss (the compress stage's loop, without
    compressors); it is left in eval mode on the CPU."""
    log = TrainingLog()
    model.to(device)
    broadcast_module(model)  # under torchrun: rank 0's weights everywhere (a missing head is drawn at random)
    torch.manual_seed(loop.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=0.01)
    start = time.perf_counter()
    training_func(loop, train, progress, log, device)(model, optimizer, lambda batch, m: task.loss(m, batch),
                                                      None, loop.total, None)
    log.seconds = time.perf_counter() - start
    model.eval().cpu()
    return log


def _finetuned(ctx: RunContext, finetune: FinetuneSection) -> dict[str, Any]:
    """Fine-tune the teacher and save it, or reload the one an earlier run of this recipe saved."""
    if ctx.finetuned_teacher:
        logger.info("teacher: reusing the one fine-tuned earlier in %s", ctx.teacher_folder)
        return json.loads((ctx.teacher_folder / MADE).read_text())
    model = ctx.load_base()  # the original weights, with a head for the data's classes where it had none
    train = ctx.encoded("train")
    # The model's own dropout while fine-tuning (as transformers' Trainer does), unlike distillation.
    loop = dataclasses.replace(Loop.of(ctx.recipe, finetune, len(train), precision=ctx.precision,
                                       desc="teacher fine-tuning"), dropout=True)
    log = finetune_model(model, train, loop, ctx.task, progress=ctx.progress, device=ctx.device)
    made = {"source": "finetuned", "missing_head": ctx.missing_head, "epochs": finetune.epochs, "steps": log.steps,
            "lr": finetune.lr, "batch_size": finetune.batch_size, "processes": loop.shard[1],
            "seconds": round(log.seconds, 1),
            "loss_first": log.loss_first, "loss_last": log.loss_last}
    if ctx.launch.is_main:  # every rank trained the same weights (gradients averaged); one writes them
        with atomic_dir(ctx.teacher_folder) as tmp:
            model.save_pretrained(tmp)
            (tmp / MADE).write_text(json.dumps(made, indent=1))
    ctx.teacher = model.requires_grad_(False)  # what compress distils from; the saved copy is for a rerun
    logger.info("teacher: fine-tuned in %.1f s (%d steps), saved in %s", log.seconds, log.steps, ctx.teacher_folder)
    return made


def _advice(made: dict[str, Any]) -> str:
    if made["source"] == "finetuned":
        return ("Fine-tune it longer or at another learning rate (teacher.finetune: epochs or steps, lr), or check "
                "that data.label_column holds the classes.")
    return ("Its head may be untrained for these classes: add `teacher: {finetune: {epochs: 1}}` to the recipe to "
            "fine-tune it first, or check that data.label_column holds the classes.")


def run_teacher(ctx: RunContext) -> dict[str, Any]:
    """Make the teacher (``teacher.finetune``) and hold it to the majority-class baseline.

    Raises:
        GateFailedError: its accuracy is less than ``validation.min_teacher_margin`` points above the
            baseline (exit 1; report.json gets the teacher entry and the reason).
    """
    made = _finetuned(ctx, ctx.recipe.teacher.finetune) if ctx.recipe.teacher else {"source": "checkpoint"}
    rows = torch_rows(ctx.teacher, ctx.encoded("eval"), ctx.task, desc="teacher, eval", progress=ctx.progress,
                      device=ctx.device, pooling=ctx.pooling)
    predicted, labels = ctx.task.predictions(ctx, rows)  # per text, or per word for a tagger
    accuracy = metrics.accuracy(predicted, labels)
    majority, baseline = majority_baseline(labels)
    names = ctx.data.label_names
    bound = ctx.recipe.validation.min_teacher_margin
    margin = 100 * (accuracy - baseline)
    result = {**made, "dataset": ctx.data.dataset_id, "split": ctx.recipe.data.eval_split, "accuracy": accuracy,
              "majority_baseline": baseline, "majority_class": names[majority] if names else majority,
              "margin_points": round(margin, 2), "min_margin_points": bound, "passed": margin >= bound}
    if not result["passed"]:
        reason = (f"teacher: accuracy {100 * accuracy:.1f}% on {ctx.data.name} ({ctx.recipe.data.eval_split}) is "
                  f"{margin:.1f} points above the majority-class baseline {100 * baseline:.1f}% (always "
                  f"{result['majority_class']!r}), less than validation.min_teacher_margin {bound:g}: a student "
                  f"distilled from it would be no better, so nothing was compressed. {_advice(made)}")
        raise GateFailedError(reason, report={"teacher": result})
    logger.info("teacher: accuracy %.4f, majority-class baseline %.4f", accuracy, baseline)
    return result
