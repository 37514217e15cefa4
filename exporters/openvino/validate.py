"""Check an OpenVINO IR against the PyTorch model it came from, in a separate process.

The same check as :func:`exporters.onnx.validate_onnx`, on the same generated cases (other batch
sizes and sequence lengths than the export's, a padded batch) and with the same per-output
numbers; only the runtime differs. The IR is compiled as every other caller compiles it
(:data:`exporters.openvino.runtime.RUNTIME_CONFIG`: f32 inference, not the CPU's bf16 default).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from exporters import errors
from exporters.onnx.model_io import NamedOutputsModule, as_model_tensors, eval_no_grad
from exporters.onnx.registry import OnnxConfig
from exporters.onnx.report import OutputDiff, ValidationReport

# The ONNX check's own case generation and packing: both runtimes are judged on identical inputs.
from exporters.onnx.validate import (
    DEFAULT_VALIDATION_CASES,
    FALLBACK_ATOL,
    ValidationCase,
    _input_batches,
    _output_names,
    _pack_cases,
    run_worker,
)
from exporters.openvino.runtime import compile_config, require_openvino

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("openvino_worker.py")

# The worker names the failure; this table turns the name into our exception (no if-chain).
_WORKER_ERRORS = {
    "OpenVINOLoadFailed": lambda path, e: errors.OpenVINOLoadFailed(path, e["message"]),
    "OpenVINORunFailed": lambda path, e: errors.OpenVINORunFailed(path, e["case"], e["message"]),
    "OutputNamesMismatch": lambda path, e: errors.OutputNamesMismatch(path, e["expected"], e["actual"]),
    "OutputShapeMismatch": lambda path, e: errors.OutputShapeMismatch(
        path, e["case"], e["output_name"], e["expected"], e["actual"]
    ),
}


@dataclass
class OpenVINOValidationReport(ValidationReport):
    """A :class:`~exporters.onnx.report.ValidationReport` of an OpenVINO IR: ``onnx_path`` holds the
    ``.xml`` checked; ``openvino_version`` and ``inference_precision`` say how it ran."""

    openvino_version: str | None = None
    inference_precision: str | None = None


def validate_openvino(
    model: nn.Module,
    xml_path: str | Path,
    config: OnnxConfig | None = None,
    *,
    cases: Sequence[ValidationCase] = DEFAULT_VALIDATION_CASES,
    input_batches: Sequence[Mapping[str, np.ndarray]] | None = None,
    output_names: Sequence[str] | None = None,
    atol: float | None = None,
    raise_on_failure: bool = True,
    timeout_s: float = 300.0,
) -> OpenVINOValidationReport:
    """Run the IR at ``xml_path`` in OpenVINO (in a subprocess) and compare each output with ``model``.

    Arguments as :func:`exporters.onnx.validate_onnx` (the export config generates the inputs and
    names the outputs; ``atol`` defaults to the config's); ``raise_on_failure=False`` returns the
    report either way (for int8 files, which an absolute tolerance does not judge).

    Raises:
        OpenVINONotInstalled, OpenVINOLoadFailed, OpenVINORunFailed, OutputNamesMismatch,
        OutputShapeMismatch, OpenVINOToleranceExceeded, OpenVINOValidationWorkerFailed: see
        :mod:`exporters.errors`.

    Example:
        >>> import tempfile, pathlib
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> from exporters.onnx import export_onnx, export_config_for_model
        >>> from exporters.openvino import convert_onnx_to_openvino, validate_openvino
        >>> model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=4, intermediate_size=37, vocab_size=100))
        >>> config = export_config_for_model(model, "text-classification")
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = export_onnx(model, None, folder / "model.onnx", config=config, dynamo=False)
        >>> ir = convert_onnx_to_openvino(folder / "model.onnx", folder / "openvino_model.xml")
        >>> report = validate_openvino(model, ir.xml_path, config)
        >>> report.passed, report.summary()["logits"]["argmax_agreement"], report.inference_precision
        (True, 1.0, 'f32')
    """
    require_openvino()
    started = time.perf_counter()
    xml_path = Path(xml_path)
    batches, case_info = _input_batches(config, cases, input_batches)
    input_names = config.input_names if config is not None else list(batches[0])
    forward_kwargs = config.FORWARD_KWARGS if config is not None else {}
    if atol is None:
        atol = config.atol if config is not None else FALLBACK_ATOL

    with eval_no_grad(model):
        names = _output_names(model, config, output_names, batches[0], input_names, forward_kwargs)
        wrapper = NamedOutputsModule(model, input_names, names, forward_kwargs)
        references = [wrapper(*(as_model_tensors(model, batch)[name] for name in input_names)) for batch in batches]

    arrays, request_cases = _pack_cases(case_info, batches, references, input_names, names)
    request = {
        "model_path": str(xml_path),
        "compile_config": compile_config(),
        "expected_output_names": names,
        "argmax_outputs": [name for name in names if "logits" in name],
        "cases": request_cases,
    }
    result = run_worker(WORKER_SCRIPT, request, arrays, timeout_s, errors.OpenVINOValidationWorkerFailed)
    if not result.get("ok"):
        error = result.get("error", {})
        build = _WORKER_ERRORS.get(error.get("kind"))
        if build is None:
            raise errors.OpenVINOValidationWorkerFailed(f"unknown failure {error!r}")
        raise build(str(xml_path), error)

    report = OpenVINOValidationReport(
        onnx_path=str(xml_path),
        atol=atol,
        outputs=[
            OutputDiff(case=case["case"], output_name=out["name"], shape=out["shape"],
                       max_abs_diff=out["max_abs_diff"], max_rel_diff=out["max_rel_diff"],
                       within_tolerance=out["max_abs_diff"] <= atol, argmax_agreement=out["argmax_agreement"],
                       argmax_rows=out["argmax_rows"])
            for case in result["cases"]
            for out in case["outputs"]
        ],
        cases=case_info,
        providers=["openvino:CPU"],
        elapsed_s=time.perf_counter() - started,
        openvino_version=result.get("openvino_version"),
        inference_precision=result.get("inference_precision"),
    )
    logger.info("validated %s: %s", xml_path, json.dumps(report.summary()))
    if raise_on_failure and not report.passed:
        raise errors.OpenVINOToleranceExceeded(report)
    return report
