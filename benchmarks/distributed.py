"""One process against N: `hubcompress run` on a recipe, once in one process and once through
`torchrun --nproc-per-node N`, with the same global batch (``training.batch_size`` divided by N
on each of the N processes, unless ``--same-per-device-batch``), so both runs train on the same
rows and should reach the same quality. Prints and writes the wall time of the whole command, the
compress stage's seconds, the final loss and the validation metrics of each run, and the speed-up.

On CPUs each run gets the same cores: one process with every thread, or N processes with
cores / N threads each (what torchrun's OMP_NUM_THREADS default does), unless ``--threads``. On
GPUs use one process per GPU (``--processes 1 8``). ``--processes 1 2 1 2`` alternates the runs, so
drift in the machine's load shows; the medians are reported.

Run (the demo recipe is about 7 minutes a run on 2 cores; ``--steps`` and ``--no-export`` shorten it):
    .venv/bin/python benchmarks/distributed.py
    .venv/bin/python benchmarks/distributed.py --recipe recipes/minilm-embed.yaml --steps 40 --no-export \\
        --processes 1 2 1 2 --json benchmarks/distributed_results.json
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
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.scratch_recipe import write_scratch_recipe  # noqa: E402


def _recipe(source: Path, out: Path, *, processes: int, steps: int | None, export: bool, same_per_device: bool) -> Path:
    training = dict((yaml.safe_load(source.read_text()) or {}).get("training") or {})
    changes: dict[str, Any] = {"push": None, "training": {}}
    if steps:
        changes["training"]["steps"] = steps
    if not same_per_device:
        batch = int(training.get("batch_size", 16))
        if batch % processes:
            raise SystemExit(f"training.batch_size {batch} does not split over {processes} processes")
        changes["training"]["batch_size"] = batch // processes
    if not export:
        # The gate's bounds on the ONNX files have nothing to check then.
        changes["export"] = {"onnx": False, "int8": None, "openvino": None}
    return write_scratch_recipe(source, out / f"recipe-{processes}.yaml", changes)


def run_once(model: str | None, recipe: Path, output: Path, processes: int, threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "hubcompress", "run", *([model] if model else []), "--recipe", str(recipe),
               "--output", str(output), "--no-progress"]
    if processes > 1:
        command[1:3] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                        "-m", "hubcompress"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: the gate failed, the numbers are still there
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads((output / "report.json").read_text())
    return {"processes": processes, "threads_per_process": threads, "wall_s": round(wall, 1),
            "stage_seconds": report.get("stage_seconds"), "distributed": report.get("distributed"),
            "loss_last": (report.get("compression") or {}).get("loss_last"), "quality": report.get("quality"),
            "gate_passed": (report.get("gate") or {}).get("passed")}


def _medians(runs: list[dict[str, Any]], key: str) -> dict[int, float]:
    """Processes -> the median of ``key`` (``wall_s``, or a stage's seconds) over their runs."""
    out: dict[int, list[float]] = {}
    for run in runs:
        out.setdefault(run["processes"], []).append(run[key] if key in run else run["stage_seconds"][key])
    return {n: round(statistics.median(values), 1) for n, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/minilm-embed.yaml")
    parser.add_argument("--model", help="hub id or folder (default: the recipe's model.id)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, help="override training.steps")
    parser.add_argument("--no-export", dest="export", action="store_false", help="no ONNX export (shorter runs)")
    parser.add_argument("--same-per-device-batch", action="store_true",
                        help="keep training.batch_size per process (the global batch grows with the processes)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU threads shared out per run")
    parser.add_argument("--threads", type=int, help="threads per process instead (e.g. 1: on a loaded machine, "
                        "2 threads in one process can wait on each other far longer than they compute)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    runs = []
    with tempfile.TemporaryDirectory(prefix="hubcompress-distributed-") as tmp:
        for i, n in enumerate(args.processes):  # e.g. 1 2 1 2: alternating runs show the machine's drift
            recipe = _recipe(args.recipe, Path(tmp), processes=n, steps=args.steps, export=args.export,
                             same_per_device=args.same_per_device_batch)
            threads = args.threads or max(1, args.cores // n)
            runs.append(run_once(args.model, recipe, Path(tmp) / f"out-{i}-{n}", n, threads))
            print(json.dumps(runs[-1]), flush=True)
    result = {"recipe": str(args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe),
              "model": args.model, "steps": args.steps, "export": args.export, "cpu": cpu_name(),
              "cores": args.cores, "load_average_before": load,
              "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "runs": runs,
              "median_wall_s": _medians(runs, "wall_s"), "median_compress_s": _medians(runs, "compress")}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
