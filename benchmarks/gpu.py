"""The demo recipe on a GPU machine, and what pruning buys there.

1. `hubcompress run` on all-MiniLM-L6-v2 with recipes/minilm-embed.yaml, training on the GPU
   (``training.device: auto``), data from local jsonl files instead of the packaged BBC News
   (same split): the stage times and the quality, as on CPU.
2. Latency of the dense and the compressed model in PyTorch on the GPU, fp32 and fp16, batch 1,
   8 and 64 at 128 tokens (CUDA-synchronised medians, timed round-robin in this process).

It expects a folder holding the model (``--model``; the device machine cannot reach a hub) and
``--data`` with train.jsonl / validation.jsonl. Results go to ``--out`` (gpu.json, report.json).

Run: python benchmarks/gpu.py --model /tmp/minilm --data .gpu/bbc --out $OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml


def demo_recipe_on_files(data: Path) -> dict:
    """recipes/minilm-embed.yaml reading the BBC News split from jsonl files (no PyPI packages there)."""
    recipe = yaml.safe_load(Path("recipes/minilm-embed.yaml").read_text())
    recipe["data"] = {"files": {"train": str(data / "train.jsonl"), "validation": str(data / "validation.jsonl")},
                      "max_length": recipe["data"]["max_length"]}
    recipe["card"]["base_model"] = "sentence-transformers/all-MiniLM-L6-v2"
    return recipe


def recipe_for_files(data: Path, out: Path) -> Path:
    path = out / "gpu-recipe.yaml"
    path.write_text(yaml.safe_dump(demo_recipe_on_files(data), sort_keys=False))
    return path


def gpu_latency(models: dict[str, torch.nn.Module], tokenizer, texts: list[str], runs: int) -> dict:
    out = {}
    for dtype in (torch.float32, torch.float16):
        for batch_size in (1, 8, 64):
            batch = tokenizer((texts * 64)[:batch_size], padding="max_length", truncation=True, max_length=128,
                              return_tensors="pt").to("cuda")
            cast = {name: m.to("cuda", dtype) for name, m in models.items()}
            times: dict[str, list[float]] = {name: [] for name in cast}
            with torch.no_grad():
                for m in cast.values():
                    for _ in range(3):
                        m(**batch)
                torch.cuda.synchronize()
                for _ in range(runs):
                    for name, m in cast.items():
                        start = time.perf_counter()
                        m(**batch)
                        torch.cuda.synchronize()
                        times[name].append(1000 * (time.perf_counter() - start))
            medians = {name: round(statistics.median(v), 3) for name, v in times.items()}
            medians["ratio"] = round(medians["dense"] / medians["compressed"], 2)
            out[f"{str(dtype).split('.')[-1]}_batch{batch_size}"] = medians
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    from transformers import AutoModel, AutoTokenizer

    import hubcompress
    from hubcompress.pipeline import run_pipeline

    work = Path("/tmp/hubcompress-gpu")
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = run_pipeline(str(args.model), recipe_for_files(args.data, work), work / "run", progress=False)
    wall = time.perf_counter() - start
    report = result.report
    texts = [json.loads(line)["text"] for line in (args.data / "validation.jsonl").read_text().splitlines()[:64]]
    models = {"dense": AutoModel.from_pretrained(args.model).eval(),
              "compressed": hubcompress.from_pretrained(work / "run").eval()}
    summary = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "exit_code": result.exit_code,
        "run_wall_s": round(wall, 1), "stage_seconds": report["stage_seconds"], "compression": report["compression"],
        "quality": report["quality"], "gate": report["gate"], "cpu_latency_ms_on_gpu_host": report["latency_ms"],
        "gpu_latency_ms": gpu_latency(models, AutoTokenizer.from_pretrained(args.model), texts, args.runs),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(summary, indent=1))
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
