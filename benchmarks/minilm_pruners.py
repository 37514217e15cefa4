"""Every pruner on MiniLM-L6 (the sentiment teacher in ../shared/teachers, a fine-tuned
all-MiniLM-L6-v2), heads 50% + FFN 50% with whole-head dependency groups: achieved sparsity per
group, wall time, and validation accuracy of the masked model with no recovery training.

The training pruners (Taylor, Slim, Movement, Linear/AGP over Taylor) train with the task loss on
../shared/data/moviesnippets/train.jsonl (AdamW lr 2e-5, batch 32, max_length 64) for the steps
given; the one-shot pruners measure the weights alone. Uses ../shared (benchmarks may; tests don't).

Run: .venv/bin/python benchmarks/minilm_pruners.py [--steps 40]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hubcompress.compression import TorchEvaluator
from hubcompress.compression.pruning import (
    AGPPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LevelPruner,
    LinearPruner,
    MovementPruner,
    SlimPruner,
    TaylorPruner,
    model_layout,
    transformer_config_list,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEACHER = SHARED / "teachers" / "minilm-l6-moviesnippets-sentiment"
DATA = SHARED / "data" / "moviesnippets"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def batches(tokenizer, data, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g).tolist()
    for i in range(0, len(order) - size + 1, size):
        chunk = [data[j] for j in order[i:i + size]]
        enc = tokenizer([r["text"] for r in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
        enc["labels"] = torch.tensor([r["label"] for r in chunk])
        yield enc


@torch.no_grad()
def accuracy(model, tokenizer, data) -> float:
    model.eval()
    correct = 0
    for b in batches(tokenizer, data, 125):
        labels = b.pop("labels")
        correct += int((model(**b).logits.argmax(-1) == labels).sum())
    return correct / len(data)


def achieved(model, masks) -> dict:
    layout = model_layout(model)
    hd = layout.head_dim
    heads = [int(masks[b.q]["weight"].reshape(layout.num_heads, hd, -1)[:, 0, 0].sum()) for b in layout.blocks]
    ffn = [int(masks[b.ffn_in]["weight"][:, 0].sum()) for b in layout.blocks]
    weights = [(m, t) for m, ts in masks.items() for t in ts if t == "weight"]
    zeros = sum(float((1 - masks[m][t]).sum()) for m, t in weights)
    total = sum(masks[m][t].numel() for m, t in weights)
    return {"heads_kept_per_layer": heads, "ffn_kept_per_layer": ffn,
            "masked_share_of_pruned_weights": round(zeros / total, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    base = AutoModelForSequenceClassification.from_pretrained(TEACHER)
    train, validation = rows("train.jsonl"), rows("validation.jsonl")
    print(json.dumps({"pruner": "dense teacher", "validation_accuracy": accuracy(base, tokenizer, validation)}))
    steps = args.steps

    def evaluator_for(model):
        data = batches(tokenizer, train, 32)

        def training_func(m, opt, training_step, sched, max_steps, max_epochs):
            m.train()
            for _ in range(max_steps):
                opt.zero_grad()
                training_step(next(data), m).backward()
                opt.step()

        return TorchEvaluator(training_func, torch.optim.AdamW(model.parameters(), lr=2e-5),
                              lambda b, m: m(**b).loss)

    def cfg(m):
        return transformer_config_list(m, heads=0.5, ffn=0.5)

    builders = {
        "LevelPruner": lambda m: LevelPruner(m, cfg(m)),
        "L1NormPruner": lambda m: L1NormPruner(m, cfg(m)),
        "L2NormPruner": lambda m: L2NormPruner(m, cfg(m)),
        "FPGMPruner": lambda m: FPGMPruner(m, cfg(m)),
        "TaylorPruner": lambda m: TaylorPruner(m, cfg(m), evaluator_for(m), training_steps=steps),
        "SlimPruner": lambda m: SlimPruner(m, cfg(m), evaluator_for(m), training_steps=steps, regular_scale=1e-4),
        "MovementPruner": lambda m: MovementPruner(m, cfg(m), evaluator_for(m), warmup_step=steps // 4,
                                                   cooldown_begin_step=steps),
        "LinearPruner(Taylor)": lambda m: LinearPruner(
            TaylorPruner(m, cfg(m), evaluator_for(m), training_steps=steps // 4), steps // 4, 4),
        "AGPPruner(Taylor)": lambda m: AGPPruner(
            TaylorPruner(m, cfg(m), evaluator_for(m), training_steps=steps // 4), steps // 4, 4),
    }
    for name, build in builders.items():
        model = copy.deepcopy(base)
        start = time.perf_counter()
        pruner = build(model)
        _, masks = pruner.compress()
        seconds = time.perf_counter() - start
        acc = accuracy(model, tokenizer, validation)
        print(json.dumps({"pruner": name, "seconds": round(seconds, 2), **achieved(model, masks),
                          "validation_accuracy_masked_no_recovery": round(acc, 4)}))
        pruner.unwrap_model()


if __name__ == "__main__":
    main()
