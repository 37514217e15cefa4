"""End to end: the dense model in fp32 PyTorch (what a user starts from) against the compressed
model that `hubcompress run` wrote, in int8 in both runtimes (ONNX Runtime and OpenVINO), with the
dense model in int8 in both runtimes as the simple alternative (what the compression adds over
plain int8, and which runtime to pick).

The int8 files: ONNX Runtime's are dynamic int8 (the folder's ``onnx/model_quantized.onnx`` for the
compressed model, ``quantize_dynamic`` of the dense export); OpenVINO's are NNCF int8 calibrated on
300 shuffled train texts of the recipe's data (the folder's ``openvino/openvino_model_qint8_quantized.xml``
when `hubcompress export --openvino` wrote it, else made here the same way).

Latency: batch 1 and 8, ``--seq`` tokens of real text, each runtime timed in its own process (an
idle runtime's thread pool still disturbs the other's in one process), the processes taking turns
for ``--rounds`` rounds so drift in machine load hits all alike; within a process the artifacts
alternate in blocks. Medians over every timed call; every runtime on ``--threads`` threads.
Quality, on the same data as the run's validation:
- embeddings (the demo, ``recipes/minilm-embed.yaml``): BBC News probe accuracy (logistic
  regression on the embeddings, fitted on the train split, scored on the validation split), cosine
  to the dense model, and the Spearman correlation of all pairwise cosine similarities with the
  dense fp32 model's on ``--similarity-count`` texts the model was not distilled on
  (``--similarity-texts``, a JSON-lines file with a ``text`` field; default
  ../shared/data/moviesnippets/agreement.jsonl when present);
- classifier (``recipes/bert-classify.yaml``, teacher in ../shared/teachers): accuracy on
  ../shared/data/moviesnippets/validation.jsonl.

Run (after the matching `hubcompress run`, with the openvino extra installed):
    .venv/bin/python benchmarks/end_to_end.py out/demo
    .venv/bin/python benchmarks/end_to_end.py out/bert-classify --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIMILARITY_TEXTS = ROOT.parent / "shared" / "data" / "moviesnippets" / "agreement.jsonl"
REFERENCE = "dense_fp32_pytorch"
# Artifact name -> runtime; each runtime's artifacts are timed together in one process.
ARTIFACTS = {REFERENCE: "torch", "dense_int8_ort": "onnxruntime", "compressed_int8_ort": "onnxruntime",
             "dense_int8_openvino": "openvino", "compressed_int8_openvino": "openvino"}
BATCHES = (1, 8)
CALIBRATION_SAMPLES = 300


# --- timing, in one process per runtime --------------------------------------------------------------
def timed(runners: dict[str, Callable[[], Any]], runs: int, block: int = 5) -> dict[str, list[float]]:
    """Milliseconds of each call of each runner. Blocks of ``block`` calls alternate between runners;
    each block starts after a pause and an untimed call, since a runtime's worker threads spin for a
    while after a call and would steal the next runner's cores."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(1, runs // block)):
        for name, run in runners.items():
            time.sleep(0.2)
            run()
            for _ in range(block):
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def _torch_runners(spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    import torch
    import transformers

    torch.set_num_threads(spec["threads"])
    model = getattr(transformers, spec["auto_class"]).from_pretrained(spec["dense_folder"]).eval()
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}

    def run() -> Any:
        with torch.no_grad():
            return model(**tensors)

    return {REFERENCE: run}


def _ort_runners(spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    import onnxruntime as ort

    runners = {}
    for name, path in spec["paths"].items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        runners[name] = lambda s=session, f={k: v for k, v in feeds.items() if k in wanted}: s.run(None, f)
    return runners


def _openvino_runners(spec: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    from exporters.openvino import compile_openvino

    runners = {}
    for name, path in spec["paths"].items():
        compiled = compile_openvino(path, spec["threads"])
        request = compiled.create_infer_request()
        wanted = {n for port in compiled.inputs for n in port.get_names()}
        runners[name] = lambda r=request, f={k: v for k, v in feeds.items() if k in wanted}: r.infer(f)
    return runners


RUNNERS = {"torch": _torch_runners, "onnxruntime": _ort_runners, "openvino": _openvino_runners}


def time_worker(spec_path: Path) -> None:
    """The timing process of one runtime: prints {batch: {artifact: [ms, ...]}} as JSON."""
    spec = json.loads(spec_path.read_text())
    out = {}
    for batch in BATCHES:
        with np.load(spec["inputs"][str(batch)]) as saved:
            feeds = {name: saved[name] for name in saved.files}
        out[f"batch{batch}"] = timed(RUNNERS[spec["runtime"]](spec, feeds), spec["runs"])
    print(json.dumps(out))


def time_all(specs: dict[str, dict[str, Any]], rounds: int,
             work: Path) -> tuple[dict[str, dict[str, float]], list[dict[str, dict[str, float]]]]:
    """Median ms per batch size and artifact over ``rounds`` turns of one process per runtime, and
    each round's medians (how far they spread says how noisy the machine was)."""
    calls: dict[str, dict[str, list[float]]] = {f"batch{b}": {} for b in BATCHES}
    per_round: list[dict[str, dict[str, float]]] = []
    for turn in range(rounds):
        this_round: dict[str, dict[str, float]] = {f"batch{b}": {} for b in BATCHES}
        for runtime, spec in specs.items():
            path = work / f"{runtime}.json"
            path.write_text(json.dumps(spec))
            done = subprocess.run([sys.executable, __file__, "--time-worker", str(path)], capture_output=True,
                                  text=True, check=False, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            if done.returncode != 0:
                raise RuntimeError(f"the {runtime} timing process failed:\n{done.stderr[-3000:]}")
            for batch, per_artifact in json.loads(done.stdout.strip().splitlines()[-1]).items():
                for name, values in per_artifact.items():
                    calls[batch].setdefault(name, []).extend(values)
                    this_round[batch][name] = round(statistics.median(values), 2)
        per_round.append(this_round)
        print(f"timing round {turn + 1}/{rounds}: {json.dumps(this_round)} (load {os.getloadavg()[0]:.2f})",
              file=sys.stderr)
    medians = {batch: {name: round(statistics.median(values), 2) for name, values in per.items()}
               for batch, per in calls.items()}
    return medians, per_round


# --- artifacts and quality, in the main process ----------------------------------------------------
def make_artifacts(ctx: Any, work: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Every int8 file to compare, and where each came from."""
    from exporters.onnx import ONNX_FP32, ONNX_INT8, export_config_for_model, export_onnx, quantize_dynamic_int8
    from exporters.openvino import OPENVINO_INT8, convert_onnx_to_openvino, quantize_openvino_int8
    from hubcompress.pipeline.export_stage import openvino_calibration_samples

    config = export_config_for_model(ctx.teacher, ctx.recipe.task)
    samples = openvino_calibration_samples(ctx, config.input_names, CALIBRATION_SAMPLES)

    def openvino_int8(onnx: Path, stem: str) -> Path:
        fp32 = convert_onnx_to_openvino(onnx, work / f"{stem}.xml")
        return Path(quantize_openvino_int8(fp32.xml_path, work / f"{stem}_int8.xml", samples,
                                           show_progress=False).int8_path)

    export_onnx(ctx.teacher, None, work / "dense.onnx", config=config, prefer=ctx.recipe.export.exporter)
    quantize_dynamic_int8(work / "dense.onnx", work / "dense.int8.onnx")
    paths = {"dense_int8_ort": work / "dense.int8.onnx", "dense_int8_openvino": openvino_int8(work / "dense.onnx", "dense"),
             "compressed_int8_ort": ctx.output / ONNX_INT8}
    origin = {"dense_int8_ort": "quantize_dynamic of the dense export", "compressed_int8_ort": ONNX_INT8,
              "dense_int8_openvino": f"NNCF, {len(samples)} shuffled train texts"}
    if (ctx.output / OPENVINO_INT8).is_file() and (ctx.output / OPENVINO_INT8).with_suffix(".bin").is_file():
        paths["compressed_int8_openvino"] = ctx.output / OPENVINO_INT8
        origin["compressed_int8_openvino"] = OPENVINO_INT8
    else:
        paths["compressed_int8_openvino"] = openvino_int8(ctx.output / ONNX_FP32, "compressed")
        origin["compressed_int8_openvino"] = f"NNCF here, {len(samples)} shuffled train texts"
    return paths, origin


def rows(ctx: Any, paths: dict[str, Path], data: Any) -> dict[str, np.ndarray]:
    """One output row per text of ``data``, per artifact (embeddings pooled as the base model says)."""
    from hubcompress.pipeline.validate import backend_rows, torch_rows
    from hubcompress.serving.backends import open_backend

    out = {REFERENCE: torch_rows(ctx.teacher, data, ctx.task, desc="dense", progress=False, pooling=ctx.pooling)}
    for name, path in paths.items():
        backend = open_backend(ARTIFACTS[name], path, spinning=True)
        out[name] = backend_rows(backend, data, ctx.task, desc=name, progress=False, pooling=ctx.pooling)
    return out


def quality(ctx: Any, paths: dict[str, Path], texts: list[str]) -> dict[str, dict[str, float]]:
    from hubcompress.pipeline import metrics
    from hubcompress.pipeline.batches import Encoded

    data = ctx.data
    embeddings = ctx.recipe.task == "feature-extraction"
    splits = {"eval": rows(ctx, paths, ctx.encoded("eval"))}
    if embeddings:
        splits["train"] = rows(ctx, paths, ctx.encoded("train"))
    similar = rows(ctx, paths, Encoded(ctx.tokenizer, texts, max_length=ctx.recipe.data.max_length)) \
        if embeddings and texts else {}
    out = {}
    for name in splits["eval"]:
        if embeddings:
            out[name] = {"probe_accuracy": metrics.probe_accuracy(splits["train"][name], np.asarray(data.train.labels),
                                                                  splits["eval"][name], np.asarray(data.eval.labels)),
                         "cosine_to_dense": metrics.cosine_fidelity(splits["eval"][name],
                                                                    splits["eval"][REFERENCE])["mean"]}
            if similar:
                out[name]["similarity_spearman"] = metrics.similarity_spearman(similar[name], similar[REFERENCE])
        else:
            out[name] = {"accuracy": metrics.accuracy(splits["eval"][name].argmax(-1), np.asarray(data.eval.labels))}
    return {name: {k: round(v, 4) for k, v in values.items()} for name, values in out.items()}


def read_texts(path: Path | None, count: int) -> list[str]:
    if path is None or not path.is_file():
        return []
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return texts[:count]


def table(latency: dict[str, dict[str, float]], scores: dict[str, dict[str, float]]) -> str:
    """The README's table: speed-up over dense fp32 PyTorch at each batch size, and quality."""
    metrics_names = list(next(iter(scores.values())))
    lines = ["| artifact | " + " | ".join(f"batch {b}: ms (speed-up)" for b in BATCHES) + " | "
             + " | ".join(metrics_names) + " |", "|---|" + "---:|" * (len(BATCHES) + len(metrics_names))]
    for name in ARTIFACTS:
        cells = [f"{latency[f'batch{b}'][name]:.2f} ({latency[f'batch{b}'][REFERENCE] / latency[f'batch{b}'][name]:.2f}x)"
                 for b in BATCHES]
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(f"{scores[name][m]:.4f}"
                                                                              for m in metrics_names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", help="output folder of `hubcompress run`")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per artifact, batch size and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the per-runtime timing processes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--similarity-texts", type=Path, default=DEFAULT_SIMILARITY_TEXTS)
    parser.add_argument("--similarity-count", type=int, default=400)
    parser.add_argument("--time-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_worker:
        time_worker(args.time_worker)
        return
    if args.folder is None:
        parser.error("the output folder is required")

    from machine import cpu_name

    from hubcompress.pipeline import reopen

    load_before = os.getloadavg()
    ctx = reopen(args.folder, progress=False)
    texts = read_texts(args.similarity_texts, args.similarity_count)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths, origin = make_artifacts(ctx, work)
        inputs = {}
        seq = min(args.seq, int(getattr(ctx.teacher.config, "max_position_embeddings", args.seq)))
        for batch in BATCHES:
            encoded = ctx.tokenizer(ctx.data.eval.texts[:batch], padding="max_length", truncation=True,
                                    max_length=seq, return_tensors="np")
            inputs[str(batch)] = str(work / f"inputs{batch}.npz")
            np.savez(inputs[str(batch)], **{k: np.asarray(v) for k, v in encoded.items()})
        common = {"threads": args.threads, "runs": args.runs, "inputs": inputs}
        specs = {"torch": {**common, "runtime": "torch", "auto_class": ctx.task.auto_class,
                           "dense_folder": str(ctx.folder)}}
        for runtime in ("onnxruntime", "openvino"):
            specs[runtime] = {**common, "runtime": runtime,
                              "paths": {name: str(path) for name, path in paths.items() if ARTIFACTS[name] == runtime}}
        latency, per_round = time_all(specs, args.rounds, work)
        load_after = os.getloadavg()
        scores = quality(ctx, paths, texts)
    primary = "probe_accuracy" if ctx.recipe.task == "feature-extraction" else "accuracy"
    result = {
        "cpu": cpu_name(), "threads": args.threads, "seq": seq, "runs_per_round": args.runs, "rounds": args.rounds,
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before], "after_timing": [round(x, 2) for x in load_after]},
        "folder": str(args.folder), "base_model": ctx.base_model_id, "task": ctx.recipe.task,
        "eval_rows": len(ctx.data.eval), "similarity_texts": {"path": str(args.similarity_texts), "count": len(texts)},
        "int8_files": origin, "latency_ms": latency, "latency_ms_per_round": per_round,
        "speedup_vs_dense_fp32_pytorch": {
            b: {name: round(lat[REFERENCE] / lat[name], 2) for name in lat} for b, lat in latency.items()},
        "quality": scores,
        "drop_points_vs_dense": {name: round(100 * (scores[REFERENCE][primary] - s[primary]), 2)
                                 for name, s in scores.items()},
    }
    print(json.dumps(result, indent=1))
    print(table(latency, scores))


if __name__ == "__main__":
    main()
