"""Quality that embedding users need, per output folder of `hubcompress run`: speed-up over the original
at batch 1 and 8 and the in-domain probe (both from the run's report.json), and, measured here
against the original in fp32 PyTorch, the Spearman correlation of all pairwise cosine similarities
and the mean top-10 nearest-neighbour overlap on out-of-domain texts:
- ``--texts`` (default ../shared/data/moviesnippets/agreement.jsonl: Amazon review snippets, NYT
  editorial snippets and tweets; never distillation text), ``--count`` of them drawn with seed 0 from
  the whole file (its first 400 rows are all Amazon reviews);
- the built-in ``dialogue`` set (hubcompress/data: chat questions and answers), used neither for
  distillation nor for tuning, the same 400 texts the validate stage measures by default.

Every artifact of the folder is measured (student in PyTorch, ONNX fp32/int8, OpenVINO fp32/int8
when present). Prints one Markdown table per folder and, with ``--json``, writes the numbers.

Run (after `hubcompress run ... --output out/demo`):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py out/demo [more folders] [--json quality.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEXTS = ROOT.parent / "shared" / "data" / "moviesnippets" / "agreement.jsonl"
TOP_K = 10


def embeddings(ctx: Any, texts: list[str]) -> dict[str, Any]:
    """Pooled embeddings of ``texts`` from the original (``teacher``) and every artifact of the folder."""
    from hubcompress.pipeline.batches import Encoded
    from hubcompress.pipeline.validate import backend_rows, exported, torch_rows
    from hubcompress.serving.backends import open_backend

    data = Encoded(ctx.tokenizer, texts, max_length=ctx.recipe.data.max_length)
    out = {name: torch_rows(model, data, ctx.task, desc=name, progress=False, pooling=ctx.pooling)
           for name, model in (("teacher", ctx.teacher), ("student", ctx.student()))}
    for name, artifact in exported(ctx).items():
        backend = open_backend(artifact.runtime, ctx.output / artifact.path, spinning=True)
        out[name] = backend_rows(backend, data, ctx.task, desc=name, progress=False, pooling=ctx.pooling)
    return out


def fidelity(rows: dict[str, Any]) -> dict[str, dict[str, float]]:
    from hubcompress.pipeline import metrics

    return {name: {"spearman": metrics.similarity_spearman(values, rows["teacher"]),
                   f"top{TOP_K}": metrics.topk_overlap(values, rows["teacher"], k=TOP_K)}
            for name, values in rows.items() if name != "teacher"}


def speed_ups(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each artifact's speed-up over the original at batch 1 and 8, from the run's own latencies."""
    latency = report.get("latency_ms") or {}
    return {f"b{b}": {name: round(latency[f"batch{b}"]["teacher"] / ms, 2)
                      for name, ms in latency.get(f"batch{b}", {}).items() if name != "teacher"}
            for b in (1, 8)}


def measure(folder: Path, sets: dict[str, Any]) -> dict[str, Any]:
    from hubcompress.pipeline import reopen

    report = json.loads((folder / "report.json").read_text())
    ctx = reopen(folder, progress=False)
    speed = speed_ups(report)
    return {
        "folder": str(folder),
        "wall_s": round(sum(v or 0 for v in report.get("stage_seconds", {}).values()), 1),
        "stage_seconds": report.get("stage_seconds"),
        "probe": {name: values.get("probe_accuracy") for name, values in report.get("quality", {}).items()},
        "speed_up": speed,
        "fidelity": {set_id: {"name": texts.name, "rows": len(texts), "scores": fidelity(embeddings(ctx, texts.texts))}
                     for set_id, texts in sets.items()},
    }


def table(result: dict[str, Any]) -> str:
    sets = result["fidelity"]
    names = [n for n in result["probe"] if n != "teacher"]
    header = ["artifact", "b1 speed-up", "b8 speed-up", "probe"] + [f"{s} {m}" for s in sets for m in ("Spearman", f"top-{TOP_K}")]
    lines = [f"{result['folder']}: stages {result['wall_s']} s; probe of the original "
             f"{100 * (result['probe'].get('teacher') or 0):.2f}%",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name in names:
        cells = [f"{result['speed_up'][b].get(name, float('nan')):.2f}x" for b in ("b1", "b8")]
        probe = result["probe"].get(name)
        cells.append("–" if probe is None else f"{100 * probe:.2f}%")
        for s in sets.values():
            scores = s["scores"].get(name, {})
            cells += [f"{scores.get('spearman', float('nan')):.3f}", f"{scores.get(f'top{TOP_K}', float('nan')):.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="output folders of `hubcompress run`")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="out-of-domain JSON lines with 'text'")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    from machine import cpu_name

    from hubcompress.pipeline.text_sets import DEFAULT_FIDELITY_TEXTS, load_text_set

    sets = {"builtin": load_text_set(DEFAULT_FIDELITY_TEXTS).sample(args.count)}
    if args.texts.is_file():
        sets = {"ood": load_text_set(str(args.texts), key="--texts").sample(args.count), **sets}
    else:
        print(f"{args.texts} not found: measuring the built-in set only")
    results = [measure(folder, sets) for folder in args.folders]
    print(f"CPU: {cpu_name()}; sets: " + "; ".join(f"{k} = {v.name} ({len(v)} texts)" for k, v in sets.items()))
    for result in results:
        print(table(result))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
