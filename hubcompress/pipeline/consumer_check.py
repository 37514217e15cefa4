"""Load an output folder the way its users will, in a process that cannot import hubcompress, and
compare what each consumer computes with the exported ONNX model.

Run by the validate stage as ``python -I -c <this file's text> request.json``; it imports only
numpy, torch, transformers, onnxruntime and sentence-transformers, and blocks ``hubcompress``,
``exporters`` and ``model_cards``, so a folder that only loads with our help fails here. It prints
one JSON object: per consumer what was loaded, the largest difference to ONNX Runtime, and the
reasons the folder fails (empty when it passes).

The request: ``{"folder", "auto_class", "output", "texts", "images", "atol", "min_cosine"}`` where
``output`` is the ONNX output the task reads (``last_hidden_state`` or ``logits``); ``images`` (paths of
image files) replaces ``texts`` for an image model, which the folder's own image processor prepares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

BLOCKED = ("hubcompress", "exporters", "model_cards")

# exporters.onnx.ONNX_FP32, spelled out: this process must not import the project's packages.
FP32 = "onnx/model.onnx"


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_onnx(session: Any, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    # Token ids and masks are int64 in the graph, pixel values float32, whatever the preprocessor gave.
    types = {i.name: np.float32 if "float" in i.type else np.int64 for i in session.get_inputs()}
    (value,) = session.run([output], {k: np.asarray(v, dtype=types[k]) for k, v in feeds.items() if k in types})
    return value


def _inputs(req: dict[str, Any], folder: Path) -> dict[str, np.ndarray]:
    """The request's texts through the folder's tokenizer, or its images through its image processor."""
    if req.get("images"):
        from PIL import Image
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(folder)
        images = [Image.open(path).convert("RGB") for path in req["images"]]
        return dict(processor(images=images, return_tensors="np"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return dict(tokenizer(req["texts"], padding=True, truncation=True, max_length=req.get("max_length", 128),
                          return_tensors="np"))


def _relative_max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1.0))


def check_transformers(req: dict[str, Any], folder: Path, encoded: Any, reference: np.ndarray) -> dict[str, Any]:
    import torch
    import transformers

    config = json.loads((folder / "config.json").read_text())
    remote = "auto_map" in config
    cls = getattr(transformers, req["auto_class"])
    result: dict[str, Any] = {"class": req["auto_class"], "trust_remote_code": remote}
    model = cls.from_pretrained(folder, trust_remote_code=remote).eval()
    result["loaded_as"] = type(model).__name__
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in encoded.items()})
    values = getattr(out, req["output"]).float().numpy()
    result["max_rel_diff_to_onnx"] = _relative_max_diff(reference, values)
    if remote:
        # Without remote code the stock class is built at the base model's shapes: transformers must
        # refuse the weights, never load something that computes other numbers.
        try:
            plain = cls.from_pretrained(folder, trust_remote_code=False).eval()
        except Exception as error:  # transformers' own size-mismatch error is the wanted outcome
            result["plain_load"] = f"refused ({type(error).__name__})"
        else:
            with torch.no_grad():
                plain_values = getattr(plain(**{k: torch.as_tensor(v) for k, v in encoded.items()}), req["output"])
            diff = _relative_max_diff(reference, plain_values.float().numpy())
            result["plain_load"] = f"loaded, max rel diff {diff:.2e}"
            result["plain_load_diff"] = diff
    return result


def check_sentence_transformers(req: dict[str, Any], folder: Path, session: Any) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    texts = req["texts"]
    embeddings = model.encode(texts, convert_to_numpy=True)
    # The same texts through ONNX Runtime, tokenized and pooled by sentence-transformers' own modules.
    features = model.tokenize(texts)
    tensors = {k: v.numpy() for k, v in features.items() if isinstance(v, torch.Tensor)}
    hidden = _run_onnx(session, tensors, req["output"])
    pooled = {**features, "token_embeddings": torch.from_numpy(hidden)}
    for module in list(model)[1:]:
        pooled = module(pooled)
    onnx_embeddings = pooled["sentence_embedding"].numpy()
    a = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    b = onnx_embeddings / np.maximum(np.linalg.norm(onnx_embeddings, axis=1, keepdims=True), 1e-12)
    return {"modules": [type(m).__name__ for m in model], "max_seq_length": model.max_seq_length,
            "dimension": int(embeddings.shape[1]), "min_cosine_to_onnx": float((a * b).sum(1).min())}


def check_onnx_files(folder: Path, encoded: dict[str, np.ndarray], output: str) -> dict[str, Any]:
    found = {}
    for path in sorted((folder / "onnx").glob("*.onnx")):
        value = _run_onnx(_session(path), encoded, output)
        found[str(path.relative_to(folder))] = {"output_shape": list(value.shape)}
    return found


def main(request_path: str) -> dict[str, Any]:
    req = json.loads(Path(request_path).read_text())
    folder = Path(req["folder"])
    reasons: list[str] = []
    report: dict[str, Any] = {}
    encoded = _inputs(req, folder)
    session = _session(folder / FP32)
    reference = _run_onnx(session, encoded, req["output"])
    steps = [("transformers", lambda: check_transformers(req, folder, encoded, reference)),
             ("onnxruntime", lambda: check_onnx_files(folder, encoded, req["output"]))]
    if (folder / "modules.json").exists():
        steps.append(("sentence_transformers", lambda: check_sentence_transformers(req, folder, session)))
    for name, step in steps:
        try:
            report[name] = step()
        except Exception as error:  # any failure to load is what this check exists to catch
            report[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
            reasons.append(f"{name} cannot load the folder: {report[name]['error']}")
    diff = report.get("transformers", {}).get("max_rel_diff_to_onnx")
    if diff is not None and diff > req["atol"]:
        reasons.append(f"transformers ({req['auto_class']}) differs from onnx/model.onnx by {diff:.2e} (relative) "
                       f"> {req['atol']}")
    plain = report.get("transformers", {}).get("plain_load_diff")
    if plain is not None and plain > req["atol"]:
        reasons.append(f"plain transformers loading (no remote code) silently gives other outputs ({plain:.2e})")
    cosine = report.get("sentence_transformers", {}).get("min_cosine_to_onnx")
    if cosine is not None and cosine < req["min_cosine"]:
        reasons.append(f"sentence-transformers embeddings reach cosine {cosine:.6f} to the ONNX model's "
                       f"< {req['min_cosine']}")
    return {**report, "passed": not reasons, "reasons": reasons}


def run_consumer_check(folder: Path, *, auto_class: str, output: str, texts: list[str] | None = None,
                       images: list[Any] | None = None, atol: float, min_cosine: float = 0.9999,
                       max_length: int = 128, timeout: float = 600) -> dict[str, Any]:
    """Run this file in a fresh process on ``folder`` and return its verdict (see the module docstring);
    ``texts`` for a text model, ``images`` (PIL images) for an image model."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hubcompress-consumers-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        paths = []
        for i, image in enumerate(images or []):  # files, as a user's images would be
            paths.append(str(Path(tmp) / f"image{i}.png"))
            image.convert("RGB").save(paths[-1])
        request.write_text(json.dumps({"folder": str(Path(folder).resolve()), "auto_class": auto_class,
                                       "output": output, "texts": texts or [], "images": paths, "atol": atol,
                                       "min_cosine": min_cosine,
                                       "max_length": max_length, "result": str(result)}))
        # -I: no current directory or user site on the path; the script blocks hubcompress itself.
        done = subprocess.run([sys.executable, "-I", "-c", Path(__file__).read_text(encoding="utf-8"), str(request)],
                              cwd=tmp, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not result.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"passed": False, "reasons": [f"the consumer check process failed: {tail[0]}"]}
        return json.loads(result.read_text())


if __name__ == "__main__":
    for _name in BLOCKED:
        sys.modules[_name] = None  # type: ignore[assignment]  # "import hubcompress" now fails
    _request = json.loads(Path(sys.argv[1]).read_text())
    Path(_request["result"]).write_text(json.dumps(main(sys.argv[1])))
