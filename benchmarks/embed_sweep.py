"""Tune the demo recipe: variants of recipes/minilm-embed.yaml run through the whole pipeline,
one after another, each with its quality (cosine to the original, BBC News probe accuracy of the
PyTorch student and of the ONNX int8 file) and its compress time.

Made for a GPU machine, where 300 training steps take seconds (the CPU demo takes minutes for the
same steps, and the same steps give the same quality up to numerics). Data: local jsonl files
with the packaged BBC News split (``--data``), since such a machine has no PyPI packages of ours.

Run: python benchmarks/embed_sweep.py --model /tmp/minilm --data .gpu/bbc --out $OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import yaml
from gpu import demo_recipe_on_files

# name -> changes to the demo recipe (nested dicts are merged)
VARIANTS: dict[str, dict] = {
    "r75_lr3e-4_240": {"training": {"lr": 3e-4, "steps": 240}},
    "r75_lr1e-3_240": {"training": {"lr": 1e-3, "steps": 240}},
    "r75_lr5e-4_300": {"training": {"lr": 5e-4, "steps": 300}},
    "r75_lr5e-4_300_fastprune": {"training": {"lr": 5e-4, "steps": 300},
                                 "pruning": {"schedule": {"kind": "agp", "interval_steps": 6, "total_times": 10}}},
    "r75_l1_oneshot_lr5e-4_300": {"training": {"lr": 5e-4, "steps": 300},
                                  "pruning": {"pruner": "L1NormPruner", "schedule": None, "args": {}}},
    "r80_lr5e-4_300": {"training": {"lr": 5e-4, "steps": 300}, "pruning": {"heads": 0.8, "ffn": 0.8}},
    "r75_lr5e-4_300_b32": {"training": {"lr": 5e-4, "steps": 300, "batch_size": 32}},
    "r67_lr5e-4_300": {"training": {"lr": 5e-4, "steps": 300}, "pruning": {"heads": 0.67, "ffn": 0.67}},
    # heads 75% + FFN 87.5%: the ratio that reaches 10x on 2 CPU cores (benchmarks/RESULTS.md)
    "h75_f875_lr1e-3_240": {"training": {"lr": 1e-3, "steps": 240}, "pruning": {"heads": 0.75, "ffn": 0.875}},
    "h75_f875_lr2e-3_240": {"training": {"lr": 2e-3, "steps": 240}, "pruning": {"heads": 0.75, "ffn": 0.875}},
    "h75_f875_lr1e-3_300": {"training": {"lr": 1e-3, "steps": 300}, "pruning": {"heads": 0.75, "ffn": 0.875}},
}


def merged(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="variant names to run")
    args = parser.parse_args()
    from hubcompress.pipeline import run_pipeline

    base = demo_recipe_on_files(args.data)
    work = Path("/tmp/hubcompress-sweep")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, changes in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        recipe = work / f"{name}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(yaml.safe_dump(merged(base, changes), sort_keys=False))
        start = time.perf_counter()
        report = run_pipeline(str(args.model), recipe, work / name, progress=False).report
        q = report["quality"]
        row = {"variant": name, "wall_s": round(time.perf_counter() - start, 1),
               "compress_s": report["stage_seconds"]["compress"], "params_after": report["speedup"]["params_after"],
               "teacher_probe": round(q["teacher"]["probe_accuracy"], 4),
               **{f"{k}_{m}": round(q[k]["cosine_to_teacher"]["mean"] if m == "cos" else q[k]["probe_accuracy"], 4)
                  for k in ("student", "onnx_int8") for m in ("cos", "probe")},
               "gate": report["gate"]["passed"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
