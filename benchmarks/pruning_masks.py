"""Mask generation time on a BERT-base-sized model (BertConfig(): 110M parameters), every Linear
layer at 50%: L1NormPruner (one shot) and TaylorPruner (10 training steps, batch 8, seq 128).

Run: .venv/bin/python benchmarks/pruning_masks.py  (prints one JSON line per measurement)
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from machine import cpu_name
from transformers import BertConfig, BertForSequenceClassification

from hubcompress.compression import TorchEvaluator
from hubcompress.compression.pruning import L1NormPruner, TaylorPruner


def main() -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig()).eval()
    params = sum(p.numel() for p in model.parameters())
    config = [{"op_types": ["Linear"], "sparse_ratio": 0.5}]
    l1_times = []
    for _ in range(5):
        start = time.perf_counter()
        pruner = L1NormPruner(model, config)
        pruner.compress()
        l1_times.append(time.perf_counter() - start)
        pruner.unwrap_model()
    print(json.dumps({"what": "L1NormPruner wrap + masks, all Linear 50%", "params": params,
                      "median_s": round(statistics.median(l1_times), 3), "runs": [round(t, 3) for t in l1_times],
                      "goal_s": 2.0, "cpu": cpu_name(), "threads": torch.get_num_threads()}))

    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 30522, (8, 128), generator=g),
             "labels": torch.randint(0, 2, (8,), generator=g)}

    def training_step(b, m):
        return m(**b).loss

    def training_func(m, opt, step, sched, max_steps, max_epochs):
        for _ in range(max_steps):
            opt.zero_grad()
            step(batch, m).backward()
            opt.step()

    model.train()
    evaluator = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=1e-4), training_step)
    pruner = TaylorPruner(model, config, evaluator, training_steps=10)
    start = time.perf_counter()
    pruner.compress()
    total = time.perf_counter() - start
    masks_start = time.perf_counter()
    pruner.generate_masks()
    masks_only = time.perf_counter() - masks_start
    pruner.unwrap_model()
    # The same 10 steps without any pruner: what Taylor adds on top of training itself.
    model2 = BertForSequenceClassification(BertConfig()).train()
    opt = torch.optim.SGD(model2.parameters(), lr=1e-4)
    start = time.perf_counter()
    training_func(model2, opt, training_step, None, 10, None)
    plain = time.perf_counter() - start
    print(json.dumps({"what": "TaylorPruner, 10 steps batch 8 seq 128, all Linear 50%", "total_s": round(total, 2),
                      "plain_training_10_steps_s": round(plain, 2), "overhead_ratio": round(total / plain, 3),
                      "mask_generation_only_s": round(masks_only, 3), "cpu": cpu_name()}))


if __name__ == "__main__":
    main()
