"""Width-only vs depth-only vs mixed at the same speed: several output folders of `hubcompress run`
(the same base model), their int8 ONNX files timed in one ONNX Runtime process that alternates
between them (and their OpenVINO int8 files, where the runs wrote them, in one OpenVINO process),
against the dense fp32 PyTorch original in its own process (end_to_end.py's timing: processes take turns for ``--rounds`` rounds so drift in machine load hits all alike), then each
folder's fidelity to the original out of domain (quality.py: Spearman of pairwise similarities and
top-10 overlap on agreement.jsonl and the built-in dialogue set) and its probe from report.json.

Run:
    cd benchmarks && HF_HUB_OFFLINE=1 ../.venv/bin/python depth_compare.py OUT_WIDTH OUT_DEPTH OUT_MIXED [--json x.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

INT8 = "onnx/model_quantized.onnx"
OPENVINO_INT8 = "openvino/openvino_model_qint8_quantized.xml"  # timed too where the run wrote it


def shape(folder: Path) -> dict[str, Any]:
    """Layers kept and the mean heads / FFN width per kept layer, from the run's report.json."""
    import hubcompress
    from hubcompress.architectures import layer_widths

    report = json.loads((folder / "report.json").read_text())
    layers = layer_widths(hubcompress.from_pretrained(folder))
    depth = report.get("compression", {}).get("depth") or {}
    return {"layers": len(layers), "dropped": depth.get("dropped", []),
            "heads": round(sum(r["heads"] for r in layers) / max(1, len(layers)), 1),
            "ffn": round(sum(r["ffn"] for r in layers) / max(1, len(layers)), 1),
            "params_after": report.get("speedup", {}).get("params_after"),
            "compress_s": report.get("stage_seconds", {}).get("compress")}


def latency(folders: list[Path], rounds: int, runs: int, threads: int, seq: int) -> dict[str, dict[str, float]]:
    import end_to_end

    from hubcompress.pipeline import reopen

    ctx = reopen(folders[0], progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        inputs = {}
        for batch in end_to_end.BATCHES:
            encoded = ctx.tokenizer(ctx.data.eval.texts[:batch], padding="max_length", truncation=True,
                                    max_length=seq, return_tensors="np")
            inputs[str(batch)] = str(work / f"inputs{batch}.npz")
            np.savez(inputs[str(batch)], **{k: np.asarray(v) for k, v in encoded.items()})
        common = {"threads": threads, "runs": runs, "inputs": inputs}
        specs = {"torch": {**common, "runtime": "torch", "auto_class": ctx.task.auto_class,
                           "dense_folder": str(ctx.folder)},
                 "onnxruntime": {**common, "runtime": "onnxruntime",
                                 "paths": {folder.name: str(folder / INT8) for folder in folders}}}
        openvino = {f"{folder.name}:openvino": str(folder / OPENVINO_INT8) for folder in folders
                    if (folder / OPENVINO_INT8).is_file()}
        if openvino:
            specs["openvino"] = {**common, "runtime": "openvino", "paths": openvino}
        medians, _ = end_to_end.time_all(specs, rounds, work)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import end_to_end
    import quality
    from machine import cpu_name

    from hubcompress.pipeline.text_sets import DEFAULT_FIDELITY_TEXTS, load_text_set

    load_before = os.getloadavg()
    ms = latency(args.folders, args.rounds, args.runs, args.threads, args.seq)
    load_after = os.getloadavg()
    sets = {"ood": load_text_set(str(quality.DEFAULT_TEXTS), key="--texts").sample(args.count),
            "builtin": load_text_set(DEFAULT_FIDELITY_TEXTS).sample(args.count)}
    rows = []
    for folder in args.folders:
        measured = quality.measure(folder, sets)
        rows.append({"folder": str(folder), **shape(folder),
                     "speed_up": {b: round(ms[b][end_to_end.REFERENCE] / ms[b][folder.name], 2) for b in ms},
                     "speed_up_openvino": {b: round(ms[b][end_to_end.REFERENCE] / ms[b][f"{folder.name}:openvino"], 2)
                                           for b in ms if f"{folder.name}:openvino" in ms[b]},
                     "probe": measured["probe"], "fidelity": {k: v["scores"] for k, v in measured["fidelity"].items()}})
    print(f"CPU: {cpu_name()}, {args.threads} threads, seq {args.seq}; load {load_before[:2]} -> {load_after[:2]}")
    print("| run | layers (dropped) | heads / FFN per layer | params | b1 | b8 | probe int8 | ood Spearman | ood top-10 "
          "| builtin Spearman | builtin top-10 | compress s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f = {k: v.get("onnx_int8", {}) for k, v in r["fidelity"].items()}
        probe = r["probe"].get("onnx_int8")
        print(f"| {Path(r['folder']).name} | {r['layers']} ({r['dropped']}) | {r['heads']} / {r['ffn']} | "
              f"{(r['params_after'] or 0) / 1e6:.2f}M | {r['speed_up']['batch1']:.2f}x | {r['speed_up']['batch8']:.2f}x | "
              f"{100 * (probe or 0):.2f}% | {f['ood'].get('spearman', float('nan')):.3f} | {f['ood'].get('top10', float('nan')):.3f} | "
              f"{f['builtin'].get('spearman', float('nan')):.3f} | {f['builtin'].get('top10', float('nan')):.3f} | "
              f"{r['compress_s']} |")
    print("\nOpenVINO int8 (NNCF), the same timing:")
    print("| run | b1 | b8 | probe int8 | ood Spearman | ood top-10 | builtin Spearman | builtin top-10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if not r["speed_up_openvino"]:
            continue
        f = {k: v.get("openvino_int8", {}) for k, v in r["fidelity"].items()}
        probe = r["probe"].get("openvino_int8")
        print(f"| {Path(r['folder']).name} | {r['speed_up_openvino']['batch1']:.2f}x | "
              f"{r['speed_up_openvino']['batch8']:.2f}x | {100 * (probe or 0):.2f}% | "
              f"{f['ood'].get('spearman', float('nan')):.3f} | {f['ood'].get('top10', float('nan')):.3f} | "
              f"{f['builtin'].get('spearman', float('nan')):.3f} | {f['builtin'].get('top10', float('nan')):.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "latency_ms": ms, "load": [load_before, load_after],
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
