"""Validation worker: runs an ONNX file in ONNX Runtime, in its own process, and compares it to PyTorch.

The parent (:func:`exporters.onnx.validate_onnx`) writes a request JSON and a ``.npz`` of
inputs and PyTorch reference outputs; this process loads the model, runs each case and writes
a result JSON. Its own process means an ONNX Runtime crash (or a leak) cannot take the caller
down, and the caller's torch threads and allocator do not disturb ONNX Runtime.

Only numpy and onnxruntime are imported, never torch or this package, so the worker starts
fast and can be run by file path:

    python exporters/onnx/validate_worker.py request.json

Failures are written as ``{"ok": false, "error": {"kind": <exception class name>, ...}}``;
the parent turns ``kind`` into the matching :mod:`exporters.errors` type.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("exporters.onnx.validate_worker")


class WorkerFailure(Exception):
    """A failure to report to the parent; ``kind`` names the exception the parent raises."""

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


def compare(ort_value: np.ndarray, reference: np.ndarray, argmax: bool) -> dict[str, Any]:
    """Diffs of one output; a NaN on one side only counts as an infinite difference."""
    actual = ort_value.astype(np.float64)
    expected = reference.astype(np.float64)
    if not np.array_equal(np.isnan(actual), np.isnan(expected)):
        max_abs = float("inf")
    else:
        diff = np.abs(np.nan_to_num(actual) - np.nan_to_num(expected))
        max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(np.nan_to_num(expected)).max()) if expected.size else 0.0
    result: dict[str, Any] = {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / scale if scale > 0 else max_abs,
        "argmax_agreement": None,
        "argmax_rows": 0,
    }
    if argmax and expected.ndim >= 1 and expected.size:
        same = np.argmax(actual, axis=-1) == np.argmax(expected, axis=-1)
        result["argmax_agreement"] = float(same.mean())
        result["argmax_rows"] = int(same.size)
    return result


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Load the model, check its outputs and run every case; raise :class:`WorkerFailure` on the first problem."""
    import onnxruntime as ort

    path = request["onnx_path"]
    try:
        session = ort.InferenceSession(path, providers=request["providers"])
    except Exception as err:
        raise WorkerFailure("OrtLoadFailed", f"{type(err).__name__}: {err}", path=path) from err

    expected_names = list(request["expected_output_names"])
    graph_names = [output.name for output in session.get_outputs()]
    if set(expected_names) != set(graph_names):
        raise WorkerFailure("OutputNamesMismatch", "output names differ", expected=expected_names, actual=graph_names)

    arrays = np.load(request["arrays_path"], allow_pickle=False)
    argmax_outputs = set(request.get("argmax_outputs", []))
    cases = []
    for case in request["cases"]:
        feeds = {name: arrays[key] for name, key in case["inputs"].items()}
        started = time.perf_counter()
        try:
            values = session.run(expected_names, feeds)
        except Exception as err:
            raise WorkerFailure("OrtRunFailed", f"{type(err).__name__}: {err}", case=case["name"]) from err
        elapsed = time.perf_counter() - started
        outputs = []
        for name, value in zip(expected_names, values, strict=True):
            reference = arrays[case["references"][name]]
            if tuple(value.shape) != tuple(reference.shape):
                raise WorkerFailure(
                    "OutputShapeMismatch",
                    "shape differs",
                    case=case["name"],
                    output_name=name,
                    expected=list(reference.shape),
                    actual=list(value.shape),
                )
            diffs = compare(value, reference, argmax=name in argmax_outputs)
            outputs.append({"name": name, "shape": list(value.shape), **diffs})
        cases.append({"case": case["name"], "ort_run_s": elapsed, "outputs": outputs})
    return {
        "ok": True,
        "ort_version": ort.__version__,
        "providers": session.get_providers(),
        "cases": cases,
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="validate_worker: %(message)s")
    if len(argv) != 1:
        logger.error("usage: validate_worker.py REQUEST_JSON")
        return 2
    request = json.loads(Path(argv[0]).read_text())
    try:
        result = run(request)
    except WorkerFailure as failure:
        result = {"ok": False, "error": {"kind": failure.kind, "message": str(failure), **failure.details}}
    Path(request["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
