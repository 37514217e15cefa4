"""Validation worker: runs an OpenVINO IR, in its own process, and compares it to PyTorch.

The OpenVINO twin of ``exporters/onnx/validate_worker.py``: the same request (a JSON plus a
``.npz`` of inputs and PyTorch references), the same comparison (that worker's ``compare``, so both
runtimes are judged by the same numbers), the same result format. Its own process keeps a crash
of the CPU plugin, and OpenVINO's thread pool, away from the caller.

Only numpy and openvino are imported, never torch or this package, and it runs by file path:

    python exporters/openvino/openvino_worker.py request.json
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("exporters.openvino.openvino_worker")


def _onnx_worker() -> Any:
    # Loaded by path: importing it as exporters.onnx.validate_worker would import exporters.onnx,
    # and with it torch, which this process keeps out.
    path = Path(__file__).resolve().parents[1] / "onnx" / "validate_worker.py"
    spec = importlib.util.spec_from_file_location("_onnx_validate_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_ONNX = _onnx_worker()
WorkerFailure = _ONNX.WorkerFailure
compare = _ONNX.compare


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("Exception from")]
    return f"{type(err).__name__}: {' '.join(lines)[:800]}"


def _type_name(value: Any) -> str:
    return value.to_string() if hasattr(value, "to_string") else str(value)  # "f32" rather than "<Type: 'float32'>"


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Compile the IR, check its outputs and run every case; raise ``WorkerFailure`` on the first problem."""
    import openvino as ov

    path = request["model_path"]
    try:
        compiled = ov.Core().compile_model(path, "CPU", dict(request.get("compile_config") or {}))
    except Exception as err:
        raise WorkerFailure("OpenVINOLoadFailed", _one_line(err), path=path) from err

    expected_names = list(request["expected_output_names"])
    ports = {name: port for port in compiled.outputs for name in port.get_names()}
    graph_names = [port.get_any_name() for port in compiled.outputs]
    if not set(expected_names) <= set(ports) or len(graph_names) != len(expected_names):
        raise WorkerFailure("OutputNamesMismatch", "output names differ", expected=expected_names, actual=graph_names)

    arrays = np.load(request["arrays_path"], allow_pickle=False)
    argmax_outputs = set(request.get("argmax_outputs", []))
    infer = compiled.create_infer_request()
    cases = []
    for case in request["cases"]:
        feeds = {name: arrays[key] for name, key in case["inputs"].items()}
        started = time.perf_counter()
        try:
            results = infer.infer(feeds)
        except Exception as err:
            raise WorkerFailure("OpenVINORunFailed", _one_line(err), case=case["name"]) from err
        elapsed = time.perf_counter() - started
        outputs = []
        for name in expected_names:
            value = np.asarray(results[ports[name]])
            reference = arrays[case["references"][name]]
            if tuple(value.shape) != tuple(reference.shape):
                raise WorkerFailure("OutputShapeMismatch", "shape differs", case=case["name"], output_name=name,
                                    expected=list(reference.shape), actual=list(value.shape))
            outputs.append({"name": name, "shape": list(value.shape),
                            **compare(value, reference, argmax=name in argmax_outputs)})
        cases.append({"case": case["name"], "run_s": elapsed, "outputs": outputs})
    return {"ok": True, "openvino_version": ov.get_version(),
            "inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")), "cases": cases}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="openvino_worker: %(message)s")
    if len(argv) != 1:
        logger.error("usage: openvino_worker.py REQUEST_JSON")
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
