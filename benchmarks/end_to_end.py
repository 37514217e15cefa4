"""End to end: the dense model in fp32 PyTorch (what a user starts from) against the compressed
model that `hubcompress run` wrote, in ONNX Runtime int8, with the dense model in ONNX Runtime
int8 as the simple alternative (what the compression adds over plain int8).

Latency: batch 1 and 8, 128 tokens of real text, every artifact timed round-robin in this one
process (medians of ``--runs``), torch and ONNX Runtime on the same number of threads.
Quality, on the same data as the run's validation:
- embeddings (the demo, ``recipes/minilm-embed.yaml``): BBC News probe accuracy (logistic
  regression on the embeddings, fitted on the train split, scored on the validation split) and
  cosine to the dense model;
- classifier (``recipes/bert-classify.yaml``, teacher in ../shared/teachers): accuracy on
  ../shared/data/moviesnippets/validation.jsonl.

Run (after the matching `hubcompress run`):
    .venv/bin/python benchmarks/end_to_end.py out/demo
    .venv/bin/python benchmarks/end_to_end.py out/bert-classify --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from machine import cpu_name

from exporters.onnx import ONNX_INT8, export_config_for_model, export_onnx, quantize_dynamic_int8
from hubcompress.pipeline import metrics, reopen
from hubcompress.pipeline.validate import onnx_rows, torch_rows


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def dense_int8(model: torch.nn.Module, task: str, folder: Path, exporter: str) -> Path:
    """The simple alternative: the dense model exported (with the run's exporter) and dynamically
    quantized, nothing else."""
    config = export_config_for_model(model, task)
    export_onnx(model, None, folder / "dense.onnx", config=config, prefer=exporter)
    quantize_dynamic_int8(folder / "dense.onnx", folder / "dense.int8.onnx")
    return folder / "dense.int8.onnx"


def timed(runners: dict[str, Any], runs: int, block: int = 5) -> dict[str, float]:
    """Median ms of each runner. Blocks of ``block`` calls alternate between runners, so drift in
    machine load hits all alike. Each block starts after a pause and an untimed call: torch's and
    ONNX Runtime's worker threads spin for a while after a call and would steal the next runner's
    cores (on 2 cores that tripled ONNX Runtime's batch-1 latency)."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(1, runs // block)):
        for name, run in runners.items():
            time.sleep(0.2)
            run()
            for _ in range(block):
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def quality(ctx: Any, rows: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    out = {}
    data = ctx.data
    for name, split_rows in rows.items():
        if ctx.recipe.task == "feature-extraction":
            out[name] = {"probe_accuracy": metrics.probe_accuracy(split_rows["train"], np.asarray(data.train.labels),
                                                                  split_rows["eval"], np.asarray(data.eval.labels)),
                         "cosine_to_dense": metrics.cosine_fidelity(split_rows["eval"], rows["dense_fp32_pytorch"]["eval"])["mean"]}
        else:
            out[name] = {"accuracy": metrics.accuracy(split_rows["eval"].argmax(-1), np.asarray(data.eval.labels))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="output folder of `hubcompress run`")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ctx = reopen(args.folder, progress=False)
    task = ctx.task
    dense = ctx.teacher
    compressed_int8 = args.folder / ONNX_INT8
    with tempfile.TemporaryDirectory() as tmp:
        dense_int8_path = dense_int8(dense, ctx.recipe.task, Path(tmp), ctx.recipe.export.exporter)
        sessions = {"dense_int8_ort": session(dense_int8_path, args.threads),
                    "compressed_int8_ort": session(compressed_int8, args.threads)}
        texts = ctx.data.eval.texts
        latency = {}
        for batch_size in (1, 8):
            batch = dict(ctx.tokenizer(texts[:batch_size], padding="max_length", truncation=True,
                                       max_length=args.seq, return_tensors="pt"))
            feeds = {name: {k: v.numpy() for k, v in batch.items() if k in {i.name for i in s.get_inputs()}}
                     for name, s in sessions.items()}
            runners = {"dense_fp32_pytorch": lambda b=batch: dense(**b)}
            runners.update({name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()})
            with torch.no_grad():
                latency[f"batch{batch_size}"] = timed(runners, args.runs)
        splits = {"eval": ctx.encoded("eval")}
        if ctx.recipe.task == "feature-extraction":
            splits["train"] = ctx.encoded("train")
        rows: dict[str, dict[str, np.ndarray]] = {"dense_fp32_pytorch": {}, "dense_int8_ort": {}, "compressed_int8_ort": {}}
        for split, data in splits.items():
            # Embeddings pooled as the base model's sentence-transformers modules say (None: logits).
            rows["dense_fp32_pytorch"][split] = torch_rows(dense, data, task, desc="dense", progress=False,
                                                           pooling=ctx.pooling)
            rows["dense_int8_ort"][split] = onnx_rows(dense_int8_path, data, task, desc="dense int8", progress=False,
                                                      pooling=ctx.pooling)
            rows["compressed_int8_ort"][split] = onnx_rows(compressed_int8, data, task, desc="int8", progress=False,
                                                           pooling=ctx.pooling)
    scores = quality(ctx, rows)
    primary = "probe_accuracy" if ctx.recipe.task == "feature-extraction" else "accuracy"
    result = {
        "cpu": cpu_name(), "threads": args.threads, "seq": args.seq, "runs": args.runs, "folder": str(args.folder),
        "base_model": ctx.base_model_id, "task": ctx.recipe.task, "eval_rows": len(ctx.data.eval),
        "latency_ms": latency,
        "speedup_vs_dense_fp32_pytorch": {
            b: {name: round(lat["dense_fp32_pytorch"] / lat[name], 2) for name in lat} for b, lat in latency.items()},
        "quality": scores,
        "drop_points_vs_dense": {name: round(100 * (scores["dense_fp32_pytorch"][primary] - s[primary]), 2)
                                 for name, s in scores.items()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
