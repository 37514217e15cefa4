"""The compression stage: the recipe's pruner, quantizer and distiller fused on one model and
trained in one loop (``from_compressor``), as NNI 3.0 does it.

Example (one-shot pruning needs no data and no training):
    >>> from transformers import BertConfig, BertModel
    >>> from hubcompress.recipe import parse_recipe
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                              intermediate_size=64, vocab_size=50))
    >>> recipe = parse_recipe("task: feature-extraction\\npruning: {pruner: L1NormPruner, heads: 0.5}\\n")
    >>> result = compress_model(model, None, recipe, None, progress=False)
    >>> result.steps, sorted(result.masks)[0]
    (0, 'encoder.layer.0.attention.output.dense')
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import compression
from ..architectures import ARCHITECTURES
from ..compression.distributed import all_reduce_mean, average_gradients, broadcast_module, rank_and_world_size
from ..compression.pruning import model_layout, transformer_config_list
from ..errors import CompressionError, ConfigListError, UnsupportedModelError
from ..pooling import Pooling
from ..recipe import TRAINING_PRUNERS, FinetuneSection, Recipe, TrainingSection, located
from . import embedding_distillation
from .batches import Encoded
from .depth import apply_depth, teacher_counterpart
from .precision import Precision
from .tasks import TASKS

logger = logging.getLogger(__name__)

SCHEDULERS = {"agp": compression.AGPPruner, "linear": compression.LinearPruner}
# Activations in uint8 and weights per output channel: what ONNX Runtime's int8 kernels run fastest.
DEFAULT_QUANT_CONFIG = [{"op_types": ["Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "int8",
                         "target_settings": {"_input_": {"quant_dtype": "uint8"}}}]


@dataclass
class TrainingLog:
    """What a training loop did: the steps it took and its first and last loss."""

    steps: int = 0
    seconds: float = 0.0
    loss_first: float | None = None
    loss_last: float | None = None


@dataclass
class CompressResult(TrainingLog):
    masks: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    calibration: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    embedding_loss_last: dict[str, float] = field(default_factory=dict)  # distillation.embedding_loss terms
    depth: dict[str, Any] | None = None  # pruning.drop_layers: what went (pipeline/depth.py)

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "loss_first": self.loss_first,
                "loss_last": self.loss_last, "pruned_modules": len(self.masks),
                "quantized_modules": len(self.calibration),
                **({"embedding_loss_last": self.embedding_loss_last} if self.embedding_loss_last else {}),
                **({"depth": self.depth} if self.depth else {})}


def needs_training(recipe: Recipe) -> bool:
    """Whether the recipe's compressors run a training loop (and so need training data)."""
    pruning = recipe.pruning
    return bool(recipe.distillation or recipe.quantization
                or (pruning and pruning.prunes_width and (pruning.pruner in TRAINING_PRUNERS or pruning.schedule)))


def planned_steps(budget: TrainingSection | FinetuneSection, train_rows: int, world_size: int = 1) -> int:
    """The steps a budget (``training``, or ``teacher.finetune``) asks for: its steps, or its epochs
    (default 1) over ``train_rows`` rows, in global batches (``batch_size`` rows on each of
    ``world_size`` processes)."""
    if budget.steps:
        return budget.steps
    epochs = budget.epochs or 1.0
    return max(1, math.ceil(epochs * train_rows / (budget.batch_size * world_size)))


def _pruner_args(name: str, args: dict[str, Any], total: int, recipe: Recipe) -> dict[str, Any]:
    args = dict(args)
    schedule = recipe.pruning.schedule if recipe.pruning else None
    if name in ("TaylorPruner", "SlimPruner"):
        args.setdefault("training_steps", schedule.interval_steps if schedule else max(1, min(100, total // 4)))
    if name == "MovementPruner":
        args.setdefault("warmup_step", max(1, total // 10))
        args.setdefault("cooldown_begin_step", max(2, int(total * 0.7)))
    return args


def _distill_config(model: nn.Module, task: str) -> list[dict[str, Any]]:
    """Every transformer layer's output (MSE), and for classifiers the logits (KL, T=2). After
    ``pruning.drop_layers`` the distiller's ``auto_link`` links each kept layer to the teacher layer
    it stands in for."""
    config: list[dict[str, Any]] = [{"op_names": [b.prefix for b in model_layout(model).blocks],
                                     "target_names": ["_output_"], "lambda": 1.0, "apply_method": "mse"}]
    heads = TASKS[task].distill_head
    # A tuple names the head module per architecture (BERT's "cls", RoBERTa's "lm_head", ...).
    names = dict(model.named_modules())
    head = heads if isinstance(heads, str) else next((h for h in heads or () if h in names), None)
    if head is not None:
        config.append({"op_names": [head], "target_names": ["_output_"], "lambda": 1.0,
                       "apply_method": TASKS[task].distill_method, "temperature": 2.0})
    return config


def build_chain(model: nn.Module, teacher: nn.Module | None, recipe: Recipe, evaluator: Any, total: int, *,
                teacher_predict: Callable[[Any, nn.Module], Any] | None = None,
                depth: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fused compressors, oldest first: ``{"pruner", "quantizer", "distiller", "last"}``;
    ``teacher_predict`` (NNI's argument) is the distiller's, when given."""
    # Recipes name compressors by their NNI class names, which the recipe schema has checked.
    chain: dict[str, Any] = {"pruner": None, "quantizer": None, "distiller": None, "last": None}

    def add(section: str, cls: type, config_list: list[dict[str, Any]], **kwargs: Any) -> Any:
        last = chain["last"]
        try:
            return cls(model, config_list, evaluator=evaluator, **kwargs) if last is None else \
                cls.from_compressor(last, config_list, evaluator=evaluator, **kwargs)
        except ConfigListError as error:
            # Name the recipe's file, line and key: the user wrote the list there, not in Python.
            where = (section, "config_list", error.index, error.key) if getattr(recipe, section).config_list \
                else (section,)
            raise located(recipe, where, error.detail) from None

    def derived(section: str, key: str | None, what: str,
                make: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        # A config list the recipe did not write, derived from the model's architecture entry.
        try:
            return make()
        except ConfigListError as error:
            loc = (section, key) if key else (section,)
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            if model_type in ARCHITECTURES:
                raise located(recipe, loc, error.detail) from None
            name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
            message = (f"{name} is a {model_type!r} model and hubcompress has no architecture entry for it (known: "
                       f"{', '.join(sorted(ARCHITECTURES))}), so {what} cannot be derived from it. Write "
                       f"{section}.config_list with op_names / op_types of its modules, or register the architecture "
                       "(hubcompress.architectures.register_architecture).")
            raise UnsupportedModelError(str(located(recipe, loc, message))) from None

    if recipe.pruning and recipe.pruning.prunes_width:  # drop_layers alone was applied before (depth.py)
        p = recipe.pruning
        shortcut = next((k for k in ("heads", "ffn", "hidden") if getattr(p, k)), None)
        config_list = p.config_list or derived(
            "pruning", shortcut, "the heads / ffn / hidden shortcuts",
            lambda: transformer_config_list(model, heads=p.heads, ffn=p.ffn, hidden=p.hidden))
        pruner = add("pruning", getattr(compression, p.pruner), config_list,
                     **_pruner_args(p.pruner, p.args, total, recipe))
        if p.schedule:
            pruner = SCHEDULERS[p.schedule.kind](pruner, p.schedule.interval_steps, p.schedule.total_times,
                                                 evaluator=evaluator)
        chain["pruner"] = chain["last"] = pruner
    if recipe.quantization:
        q = recipe.quantization
        args = dict(q.args)
        if q.quantizer == "QATQuantizer" and recipe.pruning and recipe.pruning.schedule:
            # Fake-quantizing while masks still move wastes the observers' ranges: start after pruning.
            s = recipe.pruning.schedule
            args.setdefault("quant_start_step", min(total - 1, s.interval_steps * s.total_times))
        chain["quantizer"] = chain["last"] = add("quantization", getattr(compression, q.quantizer),
                                                 q.config_list or DEFAULT_QUANT_CONFIG, **args)
    if recipe.distillation:
        d = recipe.distillation
        args = dict(d.args)
        # A classifier's training step returns its task loss, and so does an embedding student's with
        # distillation.embedding_loss (given a teacher_predict then); otherwise the step only runs forward.
        args.setdefault("origin_loss_lambda", 1.0 if TASKS[recipe.task].has_task_loss or teacher_predict else 0.0)
        if teacher_predict is not None:
            args.setdefault("teacher_predict", teacher_predict)
        config_list = d.config_list or derived(
            "distillation", None, "the default distillation targets (the output of every transformer layer)",
            lambda: _distill_config(model, recipe.task))
        if depth:
            # Targets without a link, the default ones or the recipe's, read the teacher layer they replace.
            args["auto_link"] = teacher_counterpart(model, depth)
        chain["distiller"] = chain["last"] = add("distillation", getattr(compression, d.distiller), config_list,
                                                 teacher_model=teacher, **args)
    return chain


@contextlib.contextmanager
def dropout_probability(model: nn.Module, p: float | None) -> Iterator[None]:
    """Set every dropout module's probability to ``p`` for the block (None: leave them).

    Without dropout the student can match the teacher exactly (an unpruned student's distillation
    loss is 0, not dropout noise). Setting ``p`` rather than switching to eval mode keeps the
    model in train mode, which compressors rely on; transformers' attention reads ``dropout.p``.
    """
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)] if p is not None else []
    saved = [m.p for m in dropouts]
    for m in dropouts:
        m.p = p
    try:
        yield
    finally:
        for m, old in zip(dropouts, saved):
            m.p = old


@dataclass(frozen=True)
class Loop:
    """One training loop's settings: the compress stage's (``training``) or the teacher's
    (``teacher.finetune``, with the seed, dropout and precision of ``training``)."""

    total: int  # planned steps, unless the compressors pass max_steps
    lr: float
    batch_size: int  # per process
    seed: int
    dropout: bool
    with_labels: bool
    precision: Precision = field(default_factory=Precision)
    desc: str = "training"
    shard: tuple[int, int] = (0, 1)  # (rank, world_size): under torchrun each process trains on its slice

    @classmethod
    def of(cls, recipe: Recipe, budget: TrainingSection | FinetuneSection, train_rows: int, *,
           precision: Precision | None = None, desc: str = "training") -> Loop:
        training = recipe.training
        shard = rank_and_world_size()
        return cls(planned_steps(budget, train_rows, shard[1]), budget.lr, budget.batch_size, training.seed,
                   training.dropout, TASKS[recipe.task].needs_labels, precision or Precision(), desc, shard)


def shard_batch(batch: dict[str, torch.Tensor], rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s equal slice of a global batch (every tensor split along its first dim).

    Example:
        >>> shard_batch({"input_ids": torch.arange(8).view(4, 2)}, 1, 2)["input_ids"].tolist()
        [[4, 5], [6, 7]]
    """
    if world_size == 1:
        return batch
    rows = len(next(iter(batch.values())))
    size = rows // world_size
    if size == 0:
        raise CompressionError(f"a training batch of {rows} rows cannot be shared by {world_size} processes: the train "
                               "split needs at least one row per process.")
    return {k: v[rank * size:(rank + 1) * size] for k, v in batch.items()}


def training_func(loop: Loop, data: Encoded, progress: bool, record: TrainingLog, device: torch.device) -> Any:
    """A ``training_func`` in NNI's signature (what TorchEvaluator runs): AdamW steps over shuffled
    batches with warm-up and linear decay, a progress bar, and the losses written into ``record``.
    Data-parallel under a process group (``loop.shard``): each rank trains on its slice of every
    global batch, gradients are averaged before each step, and the loss recorded is the global one."""

    def run(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        total = max_steps or loop.total
        warmup = max(1, total // 10)
        rank, world_size = loop.shard
        # Every rank cuts the same global batches (same seed) and keeps its slice: N processes train
        # on exactly the rows, padded alike, that one process with an N times larger batch would.
        batches = (shard_batch(batch, rank, world_size) for batch in
                   data.train_batches(loop.batch_size * world_size, loop.seed, with_labels=loop.with_labels))
        # float16 gradients underflow without loss scaling; the other precisions need none (disabled: a no-op).
        scaler = torch.amp.GradScaler(device.type, enabled=loop.precision.autocast == torch.float16)
        model.train()  # compressors observe in train mode only (QAT's activation ranges, for one)
        with dropout_probability(model, None if loop.dropout else 0.0), \
                tqdm(total=total, desc=loop.desc, unit="step", disable=not progress) as bar:
            for step in range(total):
                # Linear warm-up over the first tenth, then linear decay to zero.
                scale = min((step + 1) / warmup, (total - step) / max(1, total - warmup))
                for group in optimizers.param_groups:
                    group["lr"] = loop.lr * scale
                batch = {k: v.to(device) for k, v in next(batches).items()}
                optimizers.zero_grad()
                with loop.precision.autocast_context(device):
                    loss = training_step(batch, model)
                scaler.scale(loss).backward()
                # Before the step: the compressors' step hooks (Taylor's importance) see the averaged gradients.
                average_gradients(model.parameters())
                scaler.step(optimizers)
                scaler.update()
                value = float(all_reduce_mean(loss.detach().float()))
                record.loss_first = value if record.loss_first is None else record.loss_first
                record.loss_last = value
                record.steps = step + 1
                bar.update()
                bar.set_postfix(loss=f"{value:.4f}")

    return run


def compress_model(model: nn.Module, teacher: nn.Module | None, recipe: Recipe, train: Encoded | None, *,
                   progress: bool = True, device: torch.device | str = "cpu",
                   precision: Precision | None = None, pooling: Pooling | None = None) -> CompressResult:
    """Compress ``model`` in place as the recipe says; it is left unwrapped, with the masks
    multiplied in (and, after QAT, the weights it learned), ready for speedup. ``precision`` says
    whether the loop runs under autocast (default: float32 throughout); ``pooling`` (the model
    folder's) makes the sentence embeddings ``distillation.embedding_loss`` compares."""
    device = torch.device(device)
    record = CompressResult()
    train_needed = needs_training(recipe)
    if train_needed and train is None:
        raise CompressionError("this recipe trains (distillation, quantization or a training pruner): "
                               "its 'data' section must give a train split.")
    if train_needed and not TASKS[recipe.task].has_task_loss and recipe.distillation is None:
        raise CompressionError(f"{recipe.task} has no task loss to train on: add a 'distillation' section "
                               "(the teacher's outputs are the target), or use a one-shot pruner.")
    world_size = rank_and_world_size()[1]
    total = planned_steps(recipe.training, len(train), world_size) if train_needed and train is not None else 0
    model.to(device)
    broadcast_module(model)  # under torchrun: every rank starts from rank 0's weights
    if teacher is not None:
        teacher.to(device)
        broadcast_module(teacher)
    # Layers go before the optimizer and the compressors see the model: the student trains without them.
    record.depth = apply_depth(model, recipe, train, device=device)
    evaluator, embedding = None, embedding_distillation.from_recipe(recipe, pooling, teacher)
    if train_needed:
        torch.manual_seed(recipe.training.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.training.lr, weight_decay=0.01)
        loop = Loop.of(recipe, recipe.training, len(train), precision=precision)
        evaluator = compression.TorchEvaluator(
            training_func(loop, train, progress, record, device), optimizer,
            embedding.training_step if embedding else lambda batch, m: TASKS[recipe.task].loss(m, batch))
    chain = build_chain(model, teacher, recipe, evaluator, total,
                        teacher_predict=embedding.teacher_predict if embedding and evaluator else None,
                        depth=record.depth)
    start = time.perf_counter()
    if chain["last"] is None:  # no pruning, quantization or distillation: int8 of the original, say
        logger.info("the recipe compresses nothing before export: the model is kept as it is")
        model.eval().cpu()
        return record
    chain["last"].compress(max_steps=total if train_needed else None)
    record.seconds = time.perf_counter() - start
    if evaluator is not None:
        record.steps = evaluator.step_count  # counted by the optimizer hooks, the last step included
    if embedding is not None:
        record.embedding_loss_last = dict(embedding.last)
    if chain["pruner"] is not None:
        record.masks = {m: {t: v.detach().cpu().contiguous() for t, v in ts.items()}
                        for m, ts in chain["pruner"].get_masks().items()}
    if chain["quantizer"] is not None:
        record.calibration = chain["quantizer"].get_calibration_config()
        chain["quantizer"].unwrap_model(bake=True)  # also multiplies the masks in
    elif chain["pruner"] is not None:
        chain["pruner"].unwrap_model(apply_masks=True)
    if chain["distiller"] is not None:
        chain["distiller"].unwrap_model()
    model.eval().cpu()
    if teacher is not None:
        teacher.cpu()
    logger.info("compressed in %.1f s (%d training steps)", record.seconds, record.steps)
    return record
