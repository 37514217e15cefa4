"""The same recipe at several seeds: `hubcompress run` once per seed (``training.seed``), then each
output folder measured, and every number given as mean ± sample standard deviation (min-max) over
the seeds.

- embedding recipes (feature-extraction): quality.py's measures: the run's own speed-ups at batch 1
  and 8 and probe, and, against the original in fp32 PyTorch, the Spearman correlation of pairwise
  cosine similarities and the top-10 neighbour overlap on agreement.jsonl (``ood``; drawn with seed 0)
  and on the built-in ``dialogue`` set (``builtin``); neither is distillation or tuning text;
- classifier recipes (text-classification): the run's speed-ups and accuracy on its eval split, and
  on the rows of agreement.jsonl (``--agreement``: Amazon review snippets, NYT editorial snippets,
  tweets, labelled by sentiment; all, or ``--agreement-rows`` drawn with seed 0) the share of rows
  where each artifact's class is the original's (agreement) and the out-of-domain accuracy.

Runs are resumable: a seed whose folder holds a finished run is measured, not rerun. The speed-ups
come from each run's report (timed while the run had the machine); measure speed on a quiet machine
with end_to_end.py on one of the folders.

Run (from the repository root; about 8 minutes a seed for the demo recipe on 2 cores):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/seed_grid.py recipes/minilm-embed.yaml --seeds 0 1 2 \\
        --work /tmp/grid --json benchmarks/seed_grid_minilm-embed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402
from benchmarks.machine import cpu_name  # noqa: E402
from benchmarks.scratch_recipe import write_scratch_recipe  # noqa: E402


def run_seed(recipe: Path, seed: int, work: Path, changes: dict[str, Any]) -> Path:
    """`hubcompress run` of ``recipe`` at ``seed`` into ``work/<recipe>-seed<N>`` (skipped when done)."""
    output = work / f"{recipe.stem}-seed{seed}"
    report = output / "report.json"
    if report.exists() and json.loads(report.read_text()).get("complete", True) and (output / "README.md").exists():
        return output
    scratch = write_scratch_recipe(recipe, work / f"{recipe.stem}-seed{seed}.yaml",
                                   {**changes, "training": {**changes.get("training", {}), "seed": seed},
                                    "push": None})
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "hubcompress", "run", "--recipe", str(scratch), "--output", str(output),
               "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode not in (0, 1):  # 1: the gate failed; the numbers are still there
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{output.name}: exit {done.returncode} in {time.perf_counter() - start:.0f} s", flush=True)
    return output


def _labelled(path: Path, count: int | None) -> tuple[list[str], np.ndarray]:
    """The texts and labels of ``path``: every row, or ``count`` of them drawn with seed 0."""
    import random

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if count is not None and count < len(rows):
        rows = [rows[i] for i in sorted(random.Random(0).sample(range(len(rows)), count))]
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])


def measure_classifier(folder: Path, texts: list[str], labels: np.ndarray) -> dict[str, Any]:
    """Accuracy on the eval split (from the report), agreement with the original and accuracy on ``texts``."""
    from hubcompress.pipeline import reopen

    report = json.loads((folder / "report.json").read_text())
    logits = quality.embeddings(reopen(folder, progress=False), texts)  # any task's rows: here logits
    original = logits["teacher"].argmax(-1)
    scores = {name: {"accuracy": report["quality"][name]["accuracy"],
                     "agreement": float((rows.argmax(-1) == original).mean()),
                     "ood_accuracy": float((rows.argmax(-1) == labels).mean())}
              for name, rows in logits.items()}
    return {"folder": str(folder), "wall_s": round(sum(v or 0 for v in report["stage_seconds"].values()), 1),
            "speed_up": quality.speed_ups(report), "scores": scores}


def measure_embedder(folder: Path, sets: dict[str, Any]) -> dict[str, Any]:
    found = quality.measure(folder, sets)
    scores = {name: {"probe": probe} for name, probe in found["probe"].items()}
    for set_id, measured in found["fidelity"].items():
        for name, values in measured["scores"].items():
            scores[name].update({f"{set_id}_{key}": value for key, value in values.items()})
    return {"folder": found["folder"], "wall_s": found["wall_s"], "speed_up": found["speed_up"], "scores": scores}


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per artifact and measure: mean, sd, min, max over the seeds; likewise speed-ups and wall time."""
    out: dict[str, Any] = {"wall_s": summary([r["wall_s"] for r in runs]), "artifacts": {}}
    for name in runs[0]["scores"]:
        per: dict[str, Any] = {}
        for key in runs[0]["scores"][name]:
            values = [r["scores"][name][key] for r in runs if r["scores"].get(name, {}).get(key) is not None]
            if values:
                per[key] = summary(values)
        for batch in ("b1", "b8"):
            values = [r["speed_up"][batch][name] for r in runs if name in r["speed_up"].get(batch, {})]
            if values:
                per[f"speed_up_{batch}"] = summary(values)
        out["artifacts"][name] = per
    return out


def table(recipe: str, found: dict[str, Any]) -> str:
    def cell(s: dict[str, float] | None, scale: float = 1.0, digits: int = 3) -> str:
        if s is None:
            return "–"
        return (f"{scale * s['mean']:.{digits}f} ± {scale * s['sd']:.{digits}f} "
                f"({scale * s['min']:.{digits}f}-{scale * s['max']:.{digits}f})")

    artifacts = found["artifacts"]
    keys = list(dict.fromkeys(k for per in artifacts.values() for k in per if not k.startswith("speed_up")))
    header = ["artifact", "b1 speed-up", "b8 speed-up"] + keys
    lines = [f"{recipe}: {found['seeds']} seeds, stages {cell(found['wall_s'], digits=0)} s",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, per in artifacts.items():
        percent = {"probe", "accuracy", "agreement", "ood_accuracy"}
        cells = [cell(per.get("speed_up_b1"), digits=2), cell(per.get("speed_up_b8"), digits=2)]
        cells += [cell(per.get(k), 100 if k in percent else 1, 2 if k in percent else 3) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", type=Path, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, required=True, help="the runs' output folders go here")
    parser.add_argument("--steps", type=int, help="override training.steps")
    parser.add_argument("--agreement", type=Path, default=quality.DEFAULT_TEXTS,
                        help="labelled out-of-domain JSON lines (classifiers: agreement with the original and accuracy)")
    parser.add_argument("--count", type=int, default=400, help="texts per fidelity set (embeddings)")
    parser.add_argument("--agreement-rows", type=int, help="classifiers: rows of --agreement drawn with seed 0 "
                        "(default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from hubcompress.pipeline import reopen
    from hubcompress.pipeline.text_sets import DEFAULT_FIDELITY_TEXTS, load_text_set

    changes = {"training": {"steps": args.steps}} if args.steps else {}
    results = {}
    for recipe in args.recipes:
        folders = [run_seed(recipe, seed, args.work, changes) for seed in args.seeds]
        if reopen(folders[0], progress=False).task.pooled:
            sets = {"ood": load_text_set(str(args.agreement), key="--agreement").sample(args.count),
                    "builtin": load_text_set(DEFAULT_FIDELITY_TEXTS).sample(args.count)}
            runs = [measure_embedder(folder, sets) for folder in folders]
        else:
            texts, labels = _labelled(args.agreement, args.agreement_rows)
            runs = [measure_classifier(folder, texts, labels) for folder in folders]
        results[str(recipe)] = {"seeds": len(folders), "runs": runs, **aggregate(runs)}
    print(f"CPU: {cpu_name()}")
    for recipe, found in results.items():
        print(table(recipe, found))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "seeds": args.seeds, "results": results}, indent=1))


if __name__ == "__main__":
    main()
