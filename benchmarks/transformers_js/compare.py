"""Check that a hubcompress output folder loads in transformers.js and agrees with Python.

For each dtype (fp32 -> onnx/model.onnx, q8 -> onnx/model_quantized.onnx, int8 ->
onnx/model_int8.onnx, the file names transformers.js v3 looks for) this runs ``node check.mjs``
(``pipeline(task, folder, {dtype})`` with remote models off) and compares it with Python running
the same ONNX file in onnxruntime with the folder's tokenizer:

* feature-extraction: mean pooling + L2 normalisation in both; reports the min cosine per text
  between transformers.js and onnxruntime (same file), and between transformers.js and
  ``SentenceTransformer(folder, trust_remote_code=True)`` (the PyTorch weights).
* text-classification: softmax (sigmoid for multi-label configs) over the logits; reports how
  many argmax labels agree and the largest probability difference.
* token-classification: the tokens labelled other than "O" (position and label) must be the same;
  fill-mask: the five best fillers of each masked text must be the same; question-answering: every
  question gets an answer (reported, not compared: span decoding differs between libraries).

Exit status 1 when a dtype fails to load or run, when transformers.js and onnxruntime on the same
file have a min cosine < --min-cos (default 0.999) or disagree on a label, or when fp32 has a min
cosine < --min-cos to sentence-transformers. Quantized dtypes vs sentence-transformers are reported
only (quantization error, not a loading problem).

Setup (once): cd benchmarks/transformers_js && npm install   (.npmrc skips onnxruntime-node's
CUDA download, which needs github.com; the CPU binaries come with the npm package)
Run:  .venv/bin/python benchmarks/transformers_js/compare.py out/demo
      .venv/bin/python benchmarks/transformers_js/compare.py out/demo --backend web   # onnxruntime-web WASM
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DTYPE_FILES = {"fp32": "model.onnx", "q8": "model_quantized.onnx", "int8": "model_int8.onnx"}

# ~20 texts: short and long, punctuation, numbers, casing, accents, non-Latin scripts, and some
# movie-review sentences (the tiny test classifier's vocabulary). All well under 128 tokens, so no
# runtime truncates (transformers.js truncates at model_max_length, sentence-transformers at
# max_seq_length).
TEXTS = [
    "The film was good and the music was great.",
    "the plot was awful and the actor was poor",
    "A fine film, but the plot was bad.",
    "good",
    "Compression makes transformer models smaller and faster.",
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell 3.2% on Tuesday after the central bank raised rates by 50 basis points.",
    "Café au lait, naïve résumé, jalapeño — accents everywhere!",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "Emoji test: 🚀🔥 ok?",
    "UPPERCASE AND lowercase Should Tokenize The Same For An Uncased Model.",
    "email me at someone@example.com or visit https://example.com/path?q=1",
    "",
    "   leading and trailing spaces   ",
    "Pruning removes attention heads and feed-forward neurons; distillation recovers the accuracy "
    "lost, and dynamic int8 quantization shrinks the exported ONNX file by about four times.",
    "The weather today is sunny with a light breeze from the west, and tomorrow it should rain "
    "in the afternoon before clearing up overnight, so bring an umbrella if you go out.",
    "bad bad bad awful poor",
    "Is this sentence similar to the first one? The film had good music.",
]


# fill-mask: "{mask}" becomes the tokenizer's mask token.
MASKED = ["The film was {mask} and the music was great.", "Stock markets {mask} 3.2% on Tuesday.",
          "How do I {mask} my password?", "The quick brown fox jumps over the {mask} dog.",
          "{mask} is the capital of France.", "Pruning removes attention {mask} and neurons."]
QUESTIONS = [{"question": "Where does Ada live?", "context": "Ada lives in Paris and works in Berlin."},
             {"question": "What fell on Tuesday?",
              "context": "Stock markets fell 3.2% on Tuesday after the central bank raised rates."},
             {"question": "What removes attention heads?",
              "context": "Pruning removes attention heads and feed-forward neurons; distillation recovers accuracy."}]
TOKEN_TASKS = ("token-classification", "fill-mask", "question-answering")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def detect_task(folder: Path) -> str:
    meta = folder / "hubcompress.json"
    if meta.exists():
        task = json.loads(meta.read_text()).get("task")
        if task:
            return task
    archs = json.loads((folder / "config.json").read_text()).get("architectures") or []
    return "text-classification" if any(a.endswith("ForSequenceClassification") for a in archs) \
        else "feature-extraction"


class OrtReference:
    """The folder's tokenizer + one ONNX file in Python onnxruntime."""

    def __init__(self, folder: Path, onnx_file: Path):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        config = json.loads((folder / "config.json").read_text())
        self.config = config
        limit = min(self.tokenizer.model_max_length, config.get("max_position_embeddings", 512))
        self.max_length = int(limit)
        self.session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="np")
        feed = {}
        for name in self.input_names:
            if name in enc:
                feed[name] = enc[name].astype(np.int64)
            elif name == "token_type_ids":
                feed[name] = np.zeros_like(enc["input_ids"], dtype=np.int64)
            else:
                raise RuntimeError(f"ONNX input {name!r} is not produced by the tokenizer")
        outs = self.session.run(None, feed)
        return dict(zip(self.output_names, outs)), enc["attention_mask"]

    def embed(self, texts: list[str]) -> np.ndarray:
        outs, mask = self._run(texts)
        hidden = outs.get("last_hidden_state", next(iter(outs.values())))
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return l2_normalize(pooled)

    def classify(self, texts: list[str]) -> np.ndarray:
        outs, _ = self._run(texts)
        logits = outs.get("logits", next(iter(outs.values())))
        if self.config.get("problem_type") == "multi_label_classification":
            return 1 / (1 + np.exp(-logits))
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def token_logits(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-token logits of one text, and its input ids."""
        outs, _ = self._run([text])
        enc = self.tokenizer([text], truncation=True, max_length=self.max_length, return_tensors="np")
        return outs.get("logits", next(iter(outs.values())))[0], enc["input_ids"][0]

    def label(self, index: int) -> str:
        id2label = self.config.get("id2label") or {}
        return id2label.get(str(index), f"LABEL_{index}")


def run_node(folder: Path, task: str, dtype: str, backend: str, texts_file: Path,
             timeout: float) -> tuple[dict, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_file = Path(f.name)
    cmd = ["node", str(HERE / "check.mjs"), "--model", str(folder), "--texts", str(texts_file),
           "--out", str(out_file), "--task", task, "--dtype", dtype, "--backend", backend]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        out_file.unlink(missing_ok=True)
        return {"ok": False, "error": f"node timed out after {timeout} s"}, time.perf_counter() - t0
    wall = time.perf_counter() - t0
    try:
        result = json.loads(out_file.read_text() or "{}")
    except json.JSONDecodeError:
        result = {}
    finally:
        out_file.unlink(missing_ok=True)
    if proc.returncode != 0 or not result.get("ok"):
        result.setdefault("error", proc.stderr.strip()[-4000:] or f"node exited {proc.returncode}")
        result["ok"] = False
    if proc.stderr.strip():
        result["stderr"] = proc.stderr.strip()[-2000:]
    return result, wall


def compare_tokens(task: str, ref: OrtReference, texts: list, js: dict, row: dict, failures: list[str],
                   dtype: str) -> None:
    """Token-level tasks against onnxruntime on the same file: the labelled tokens (not "O") of a
    tagger, the five best fillers of a masked text; a reader's answers are reported, not judged (span
    decoding differs between libraries)."""
    if task == "question-answering":
        row["answers"] = js["answers"]
        row["agree"] = f"{len(js['answers'])}/{len(texts)} answered"
        if len(js["answers"]) != len(texts) or not all(isinstance(a.get("answer"), str) for a in js["answers"]):
            failures.append(f"{dtype}: transformers.js did not answer every question")
        return
    agree, shown = 0, []
    for i, text in enumerate(texts):
        logits, ids = ref.token_logits(text)
        if task == "token-classification":
            special = set(ref.tokenizer.all_special_ids)
            expected = {(j, ref.label(int(k))) for j, k in enumerate(logits.argmax(-1))
                        if int(ids[j]) not in special and ref.label(int(k)) != "O"}
            got = {(int(t["index"]), t["entity"]) for t in js["tokens"][i]}
        else:
            position = int(np.flatnonzero(ids == ref.tokenizer.mask_token_id)[0])
            expected = [int(k) for k in np.argsort(-logits[position])[:5]]
            got = [int(f["token"]) for f in js["fillers"][i]]
        agree += expected == got
        if expected != got:
            shown.append((text, sorted(expected)[:4], sorted(got)[:4]))
    row["agree"] = f"{'labelled tokens' if task == 'token-classification' else 'top-5 fillers'} agree on {agree}/{len(texts)} texts"
    if agree != len(texts):
        failures.append(f"{dtype}: {len(texts) - agree} texts differ from onnxruntime, e.g. {shown[:2]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--task", choices=["feature-extraction", "text-classification", *TOKEN_TASKS],
                    help="default: hubcompress.json's task, else from config.json architectures")
    ap.add_argument("--dtypes", default="fp32,q8,int8")
    ap.add_argument("--backend", choices=["node", "web"], default="node",
                    help="node: onnxruntime-node (transformers.js's Node default); "
                         "web: onnxruntime-web WASM (what browsers run)")
    ap.add_argument("--texts", type=Path, help="JSON array of strings (default: 20 built-in texts)")
    ap.add_argument("--min-cos", type=float, default=0.999)
    ap.add_argument("--no-st", action="store_true", help="skip the sentence-transformers reference")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json-out", type=Path, help="also write the summary as JSON here")
    args = ap.parse_args(argv)

    folder = args.folder.resolve()
    if not (HERE / "node_modules" / "@huggingface" / "transformers").exists():
        print(f"run `npm install` in {HERE} first", file=sys.stderr)
        return 2
    task = args.task or detect_task(folder)
    if args.texts:
        texts = json.loads(args.texts.read_text())
    elif task == "fill-mask":
        from transformers import AutoTokenizer

        mask = AutoTokenizer.from_pretrained(str(folder)).mask_token
        texts = [t.format(mask=mask) for t in MASKED]
    else:
        texts = QUESTIONS if task == "question-answering" else TEXTS
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    texts_file = Path(tempfile.mkstemp(suffix=".json")[1])
    texts_file.write_text(json.dumps(texts))

    summary: dict = {"folder": str(folder), "task": task, "backend": args.backend,
                     "n_texts": len(texts), "min_cos_threshold": args.min_cos, "dtypes": {}}
    failures: list[str] = []
    print(f"{folder}  task={task}  backend={args.backend}  texts={len(texts)}")

    st_emb = None
    if task == "feature-extraction" and not args.no_st:
        from sentence_transformers import SentenceTransformer

        t0 = time.perf_counter()
        st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
        st_emb = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        summary["sentence_transformers_s"] = time.perf_counter() - t0
        print(f"sentence-transformers reference: {summary['sentence_transformers_s']:.2f} s")

    try:
        for dtype in dtypes:
            row: dict = {"file": f"onnx/{DTYPE_FILES.get(dtype, '?')}"}
            summary["dtypes"][dtype] = row
            onnx_file = folder / "onnx" / DTYPE_FILES.get(dtype, f"model_{dtype}.onnx")

            js, wall = run_node(folder, task, dtype, args.backend, texts_file, args.timeout)
            row["node_wall_s"] = wall
            row["js_load_ms"] = js.get("load_ms")
            row["js_run_ms"] = js.get("run_ms")
            summary.setdefault("versions", js.get("versions"))
            if not js.get("ok"):
                row["error"] = js.get("error")
                row["stage"] = js.get("stage")
                failures.append(f"{dtype}: transformers.js failed ({js.get('stage', '?')}): "
                                f"{(js.get('error') or '').splitlines()[0] if js.get('error') else ''}")
                print(f"[{dtype}] FAILED in transformers.js ({js.get('stage')}):\n{js.get('error')}")
                continue
            if not onnx_file.exists():
                failures.append(f"{dtype}: {onnx_file} missing but transformers.js loaded something")
                continue

            t0 = time.perf_counter()
            ref = OrtReference(folder, onnx_file)
            if task in TOKEN_TASKS:
                compare_tokens(task, ref, texts, js, row, failures, dtype)
                print(f"[{dtype}] {row['file']}: {row['agree']}; node wall {wall:.2f} s")
            elif task == "feature-extraction":
                py = ref.embed(texts)
                row["ort_s"] = time.perf_counter() - t0
                tj = np.asarray(js["embeddings"], dtype=np.float32)
                if tj.shape != py.shape:
                    failures.append(f"{dtype}: shape {tj.shape} vs onnxruntime {py.shape}")
                    row["error"] = "shape mismatch"
                    continue
                cos_ort = row_cosines(tj, py)
                row["min_cos_vs_ort"] = float(cos_ort.min())
                row["worst_text_vs_ort"] = texts[int(cos_ort.argmin())]
                row["max_abs_diff_vs_ort"] = float(np.abs(tj - py).max())
                if cos_ort.min() < args.min_cos:
                    failures.append(f"{dtype}: min cosine to onnxruntime {cos_ort.min():.6f} < {args.min_cos}")
                if st_emb is not None:
                    cos_st = row_cosines(tj, st_emb)
                    row["min_cos_vs_st"] = float(cos_st.min())
                    row["mean_cos_vs_st"] = float(cos_st.mean())
                    row["min_cos_ort_vs_st"] = float(row_cosines(py, st_emb).min())
                    if dtype == "fp32" and cos_st.min() < args.min_cos:
                        failures.append(f"fp32: min cosine to sentence-transformers "
                                        f"{cos_st.min():.6f} < {args.min_cos}")
                print(f"[{dtype}] {row['file']}: min cos vs ORT {row['min_cos_vs_ort']:.6f}"
                      + (f", vs ST {row['min_cos_vs_st']:.6f} (mean {row['mean_cos_vs_st']:.6f})"
                         if st_emb is not None else "")
                      + f"; node wall {wall:.2f} s (load {row['js_load_ms']:.0f} ms, "
                        f"run {row['js_run_ms']:.0f} ms); python ORT {row['ort_s']:.2f} s")
            else:
                probs = ref.classify(texts)
                row["ort_s"] = time.perf_counter() - t0
                py_labels = [ref.label(int(i)) for i in probs.argmax(axis=-1)]
                js_labels = [p["label"] for p in js["predictions"]]
                agree = sum(a == b for a, b in zip(js_labels, py_labels))
                label_names = [ref.label(i) for i in range(probs.shape[-1])]
                js_probs = np.array([[p["scores"].get(n, np.nan) for n in label_names]
                                     for p in js["predictions"]])
                row["labels_agree"] = f"{agree}/{len(texts)}"
                row["max_prob_diff"] = float(np.nanmax(np.abs(js_probs - probs)))
                sorted_p = np.sort(probs, axis=-1)
                row["min_top2_margin"] = float((sorted_p[:, -1] - sorted_p[:, -2]).min()) \
                    if probs.shape[-1] > 1 else None
                row["js_label_counts"] = {n: js_labels.count(n) for n in sorted(set(js_labels))}
                if agree != len(texts) or len(js_labels) != len(texts):
                    bad = [(t, a, b) for t, a, b in zip(texts, js_labels, py_labels) if a != b]
                    failures.append(f"{dtype}: {len(texts) - agree} labels differ, e.g. {bad[:3]}")
                print(f"[{dtype}] {row['file']}: labels agree {row['labels_agree']}, max |p diff| "
                      f"{row['max_prob_diff']:.2e} (min top-2 margin {row['min_top2_margin']:.3g}); "
                      f"node wall {wall:.2f} s (load {row['js_load_ms']:.0f} ms, "
                      f"run {row['js_run_ms']:.0f} ms); python ORT {row['ort_s']:.2f} s")
    finally:
        texts_file.unlink(missing_ok=True)

    summary["versions"] = {**(summary.get("versions") or {}), **python_versions()}
    summary["failures"] = failures
    summary["ok"] = not failures
    print("versions:", json.dumps(summary["versions"]))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print("OK")
    return 0


def python_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("onnxruntime", "transformers", "tokenizers", "sentence-transformers"):
        try:
            out[f"py:{name}"] = version(name)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
