"""Pruning + int8 QAT + layerwise distillation in one training run, on a real fine-tuned MiniLM.

Teacher: ../shared/teachers/minilm-l6-moviesnippets-sentiment (BERT, 6 layers, 12 heads, FFN
1536; 85.6% on validation.jsonl). Data: ../shared/data/moviesnippets/{train,validation,
agreement}.jsonl (see their README). The student starts as the teacher; attention heads and FFN
neurons are pruned to ``--ratio`` gradually (Taylor importance, AGP schedule over the first
``--prune-fraction`` of the steps), Linear layers are fake-quantized to int8 (QAT, from the end
of pruning), and every encoder layer's output (MSE) and the logits (KL) are distilled from the
teacher. ``--no-distill`` runs the same recipe on the task loss alone. Training stops within
``--budget-minutes`` of CPU time per run (the step count is planned from a probe of the step
time, and the loop also stops at the deadline).

Reported per run (one JSON line each, then a summary with mean and spread over seeds):
validation accuracy of teacher and student (the fake-quantized, masked student); the student's
agreement with the teacher on agreement.jsonl (out of domain, 9,387 sentences) and both models'
accuracy there; steps, training time, achieved sparsity, peak RSS.

``--memory-probe`` instead trains the full fused recipe for a few steps at ``--batch-size``
(default 32) and sequence length 128 and reports the process's peak RSS.

Examples:
    .venv/bin/python benchmarks/distill.py --ratio 0.5 --seeds 0 --budget-minutes 8
    .venv/bin/python benchmarks/distill.py --ratio 0.75 --seeds 0 1 2 --budget-minutes 20 --compare-no-distill
    .venv/bin/python benchmarks/distill.py --memory-probe
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import random
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from hubcompress.compression import (
    AGPPruner,
    DynamicLayerwiseDistiller,
    QATQuantizer,
    TaylorPruner,
    TorchEvaluator,
    transformer_config_list,
)
from hubcompress.compression.pruning import model_layout

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEACHER = SHARED / "teachers" / "minilm-l6-moviesnippets-sentiment"
DATA = SHARED / "data" / "moviesnippets"
logger = logging.getLogger("benchmarks.distill")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def load_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


class Encoded:
    """Tokenised texts; batches are padded to their longest row (or to ``pad_to``)."""

    def __init__(self, tokenizer: Any, rows: list[dict[str, Any]], max_length: int):
        enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
        self.ids = enc["input_ids"]
        self.labels = torch.tensor([int(r["label"]) for r in rows])

    def batch(self, index: list[int], pad_to: int | None = None) -> dict[str, torch.Tensor]:
        width = pad_to or max(len(self.ids[i]) for i in index)
        ids = torch.zeros(len(index), width, dtype=torch.long)
        mask = torch.zeros(len(index), width, dtype=torch.long)
        for row, i in enumerate(index):
            seq = self.ids[i][:width]
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": self.labels[index]}


@torch.no_grad()
def predict(model: torch.nn.Module, data: Encoded, batch_size: int) -> torch.Tensor:
    """Argmax predictions in the data's order (batches of similar length, for speed)."""
    model.eval()
    order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
    preds = torch.empty(len(order), dtype=torch.long)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = data.batch(index)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        preds[index] = logits.argmax(-1)
    return preds


def training_batches(data: Encoded, batch_size: int, seed: int, pad_to: int | None = None):
    rng = random.Random(seed)
    while True:
        order = list(range(len(data.ids)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield data.batch(order[start:start + batch_size], pad_to)


def distill_config(student: torch.nn.Module, hidden_lambda: float, logits_lambda: float,
                   temperature: float) -> list[dict[str, Any]]:
    layers = [b.prefix for b in model_layout(student).blocks]
    return [{"op_names": layers, "target_names": ["_output_"], "lambda": hidden_lambda, "apply_method": "mse"},
            {"op_names": ["classifier"], "target_names": ["_output_"], "lambda": logits_lambda,
             "apply_method": "kl", "temperature": temperature}]


QUANT_CONFIG = [{"op_types": ["Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "int8",
                 "target_settings": {"_input_": {"quant_dtype": "uint8"}, "weight": {"granularity": "per_channel"}}}]


def build(student: torch.nn.Module, teacher: torch.nn.Module, evaluator: TorchEvaluator, args: argparse.Namespace,
          total_steps: int, distill: bool) -> tuple[Any, TaylorPruner, Any]:
    """The fused chain: Taylor + AGP, then QAT, then (optionally) the distiller."""
    times = args.prune_updates
    interval = max(1, int(total_steps * args.prune_fraction) // times)
    taylor = TaylorPruner(student, transformer_config_list(student, heads=args.ratio, ffn=args.ratio), evaluator,
                          training_steps=interval)
    last: Any = AGPPruner(taylor, interval_steps=interval, total_times=times)
    quantizer = None
    if not args.no_quant:
        quantizer = QATQuantizer.from_compressor(last, QUANT_CONFIG, quant_start_step=interval * times)
        last = quantizer
    if distill:
        last = DynamicLayerwiseDistiller.from_compressor(
            last, distill_config(student, args.hidden_lambda, args.logits_lambda, args.temperature),
            teacher_model=teacher, origin_loss_lambda=args.origin_loss_lambda)
    return last, taylor, quantizer


def probe_step_seconds(teacher: torch.nn.Module, train: Encoded, args: argparse.Namespace, distill: bool) -> float:
    """Seconds per plain training step (+ a teacher forward when distilling), on a copy."""
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=0.0)
    batches = training_batches(train, args.batch_size, seed=1234)
    times = []
    for _ in range(4):
        batch = next(batches)
        start = time.perf_counter()
        if distill:
            with torch.no_grad():
                teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        student(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.mean(times[1:])


def run_one(seed: int, distill: bool, args: argparse.Namespace, train: Encoded, val: Encoded,
            agree: Encoded, teacher: torch.nn.Module, teacher_preds: dict[str, torch.Tensor]) -> dict[str, Any]:
    torch.manual_seed(seed)
    budget_s = args.budget_minutes * 60
    # The pruning schedule needs a step count: plan it from a probe of the step time. Pruning ends
    # at --prune-fraction of the plan, so a probe off by 2x still finishes pruning in time; the
    # loop then trains with the final masks until the deadline (or --max-steps).
    step_s = probe_step_seconds(teacher, train, args, distill) * args.overhead
    planned = args.max_steps or max(args.prune_updates * 2, int(budget_s / step_s))
    student = BertForSequenceClassification.from_pretrained(args.teacher).train()
    batches = training_batches(train, args.batch_size, seed)
    clock: dict[str, float] = {}
    warmup = max(1, planned // 20)

    def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        step = 0
        while max_steps is None or step < max_steps:
            left = clock["deadline"] - time.monotonic()
            if left <= 0:
                return
            # Linear warm-up, then a linear decay to zero at the deadline (or at max_steps).
            decay = left / budget_s if max_steps is None else (max_steps - step) / max_steps
            for group in optimizers.param_groups:
                group["lr"] = args.lr * min((step + 1) / warmup, decay)
            optimizers.zero_grad()
            training_step(next(batches), model).backward()
            optimizers.step()
            step += 1

    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.01)
    evaluator = TorchEvaluator(training_func, optimizer, lambda batch, model: model(**batch).loss)
    last, taylor, quantizer = build(student, teacher, evaluator, args, planned, distill)
    clock["deadline"] = time.monotonic() + budget_s
    start = time.perf_counter()
    if args.max_steps:
        last.compress(max_steps=args.max_steps)
    else:
        last.compress(max_epochs=1_000_000)  # the loop stops at the deadline
    train_s = time.perf_counter() - start
    masks = taylor.get_masks()
    layout = model_layout(student)
    ffn_kept = [float(masks[b.ffn_in]["weight"].amax(1).mean()) for b in layout.blocks]
    heads_kept = [float(masks[b.q]["weight"].reshape(layout.num_heads, -1).amax(1).mean()) for b in layout.blocks]
    start = time.perf_counter()
    val_preds = predict(student, val, args.eval_batch_size)
    agree_preds = predict(student, agree, args.eval_batch_size)
    eval_s = time.perf_counter() - start
    return {
        "seed": seed, "ratio": args.ratio, "distill": distill, "int8_qat": not args.no_quant,
        "steps": evaluator.step_count, "planned_steps": planned, "budget_s": budget_s, "train_s": round(train_s, 1),
        "s_per_step": round(train_s / max(1, evaluator.step_count), 3), "eval_s": round(eval_s, 1),
        "epochs": round(evaluator.step_count * args.batch_size / len(train.ids), 2),
        "heads_pruned": round(1 - statistics.mean(heads_kept), 4),
        "ffn_pruned": round(1 - statistics.mean(ffn_kept), 4),
        "val_acc_student": round(float((val_preds == val.labels).float().mean()), 4),
        "val_acc_teacher": round(float((teacher_preds["val"] == val.labels).float().mean()), 4),
        "agreement_with_teacher": round(float((agree_preds == teacher_preds["agree"]).float().mean()), 4),
        "ood_acc_student": round(float((agree_preds == agree.labels).float().mean()), 4),
        "ood_acc_teacher": round(float((teacher_preds["agree"] == agree.labels).float().mean()), 4),
        "calibrated_targets": len(quantizer.get_calibration_config()) if quantizer else 0,
        "peak_rss_mb": round(peak_rss_mb()),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for distill in sorted({r["distill"] for r in runs}, reverse=True):
        group = [r for r in runs if r["distill"] == distill]
        row: dict[str, Any] = {"summary": True, "ratio": group[0]["ratio"], "distill": distill, "seeds": len(group)}
        for key in ("val_acc_student", "val_acc_teacher", "agreement_with_teacher", "ood_acc_student", "train_s"):
            values = [r[key] for r in group]
            row[key] = {"mean": round(statistics.mean(values), 4),
                        "spread": round(statistics.stdev(values), 4) if len(values) > 1 else None,
                        "min": min(values), "max": max(values)}
        row["gap_to_teacher_points"] = round(100 * (row["val_acc_teacher"]["mean"] - row["val_acc_student"]["mean"]), 2)
        out.append(row)
    return out


def memory_probe(args: argparse.Namespace) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    train = Encoded(tokenizer, load_jsonl(DATA / "train.jsonl", 512), 128)
    teacher = BertForSequenceClassification.from_pretrained(args.teacher).eval().requires_grad_(False)
    student = BertForSequenceClassification.from_pretrained(args.teacher).train()
    batches = training_batches(train, args.batch_size, 0, pad_to=128)

    def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        for _ in range(max_steps):
            optimizers.zero_grad()
            training_step(next(batches), model).backward()
            optimizers.step()

    evaluator = TorchEvaluator(training_func, torch.optim.AdamW(student.parameters(), lr=1e-5),
                               lambda batch, model: model(**batch).loss)
    probe = argparse.Namespace(**{**vars(args), "prune_updates": 2, "prune_fraction": 0.5})
    last, _, _ = build(student, teacher, evaluator, probe, total_steps=8, distill=True)
    before = peak_rss_mb()
    start = time.perf_counter()
    last.compress(max_steps=8)
    return {"memory_probe": True, "batch_size": args.batch_size, "seq_len": 128, "steps": evaluator.step_count,
            "s_per_step": round((time.perf_counter() - start) / max(1, evaluator.step_count), 2),
            "peak_rss_mb_before_training": round(before), "peak_rss_mb": round(peak_rss_mb()),
            "goal_mb": 4096, "within_goal": peak_rss_mb() <= 4096}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of heads and FFN neurons pruned")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="training time per run")
    parser.add_argument("--max-steps", type=int, default=None, help="fixed step count instead of the budget plan")
    parser.add_argument("--compare-no-distill", action="store_true", help="also run each seed without distillation")
    parser.add_argument("--no-distill", action="store_true", help="only run without distillation")
    parser.add_argument("--no-quant", action="store_true", help="leave out int8 QAT")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--prune-fraction", type=float, default=0.5, help="share of the steps spent pruning")
    parser.add_argument("--prune-updates", type=int, default=10, help="AGP mask updates")
    parser.add_argument("--hidden-lambda", type=float, default=1.0)
    parser.add_argument("--logits-lambda", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--origin-loss-lambda", type=float, default=0.5)
    parser.add_argument("--overhead", type=float, default=1.4, help="step-time factor for hooks and fake-quant")
    parser.add_argument("--agreement-limit", type=int, default=None, help="use only the first N agreement rows")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--teacher", default=str(TEACHER))
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    parser.add_argument("--memory-probe", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    def emit(row: dict[str, Any]) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(line + "\n")

    if args.memory_probe:
        emit(memory_probe(args))
        return
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    train = Encoded(tokenizer, load_jsonl(DATA / "train.jsonl"), args.max_length)
    val = Encoded(tokenizer, load_jsonl(DATA / "validation.jsonl"), args.max_length)
    agree = Encoded(tokenizer, load_jsonl(DATA / "agreement.jsonl", args.agreement_limit), args.max_length)
    teacher = BertForSequenceClassification.from_pretrained(args.teacher).eval().requires_grad_(False)
    teacher_preds = {"val": predict(teacher, val, args.eval_batch_size),
                     "agree": predict(teacher, agree, args.eval_batch_size)}
    modes = [False] if args.no_distill else ([True, False] if args.compare_no_distill else [True])
    runs = []
    for seed in args.seeds:
        for distill in modes:
            runs.append(run_one(seed, distill, args, train, val, agree, teacher, teacher_preds))
            emit(runs[-1])
    for row in summarise(runs):
        emit(row)


if __name__ == "__main__":
    main()
