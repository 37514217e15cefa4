"""Check an exported ONNX file against the PyTorch model it came from, in a separate process.

The parent computes PyTorch reference outputs on fresh inputs (other batch sizes and sequence
lengths than the export used, padded batches included), hands inputs and references to
``validate_worker.py`` through a temporary ``.npz`` (plain arrays, never pickle), and turns the
worker's numbers into a :class:`ValidationReport` or a typed error.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn

from exporters import errors
from exporters.onnx.model_io import NamedOutputsModule, as_model_tensors, eval_no_grad, infer_output_axes
from exporters.onnx.registry import OnnxConfig
from exporters.onnx.report import OutputDiff, ValidationReport

logger = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("validate_worker.py")
FALLBACK_ATOL = 1e-4
# Seeds far from the export's (0) so validation never reuses the traced inputs.
VALIDATION_SEED = 1234


@dataclass(frozen=True)
class ValidationCase:
    """One batch of generated inputs: its size and whether some rows are padded."""

    batch_size: int
    sequence_length: int
    padded: bool = False

    @property
    def name(self) -> str:
        return f"batch={self.batch_size},seq={self.sequence_length}" + (",padded" if self.padded else "")


# Sizes unlike the export's (2, 8): batch 1, odd lengths, and a padded batch.
DEFAULT_VALIDATION_CASES = (ValidationCase(1, 5), ValidationCase(3, 11, padded=True), ValidationCase(4, 16))

# The worker names the failure; this table turns the name into our exception (no if-chain).
_WORKER_ERRORS = {
    "OrtLoadFailed": lambda path, e: errors.OrtLoadFailed(path, e["message"]),
    "OrtRunFailed": lambda path, e: errors.OrtRunFailed(path, e["case"], e["message"]),
    "OutputNamesMismatch": lambda path, e: errors.OutputNamesMismatch(path, e["expected"], e["actual"]),
    "OutputShapeMismatch": lambda path, e: errors.OutputShapeMismatch(
        path, e["case"], e["output_name"], e["expected"], e["actual"]
    ),
}


def validate_onnx(
    model: nn.Module,
    onnx_path: str | Path,
    config: OnnxConfig | None = None,
    *,
    cases: Sequence[ValidationCase] = DEFAULT_VALIDATION_CASES,
    input_batches: Sequence[Mapping[str, np.ndarray]] | None = None,
    output_names: Sequence[str] | None = None,
    atol: float | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    raise_on_failure: bool = True,
    timeout_s: float = 300.0,
) -> ValidationReport:
    """Run ``onnx_path`` in ONNX Runtime (in a subprocess) and compare each output with ``model``.

    Args:
        model: the PyTorch model the file was exported from (the reference).
        onnx_path: the exported file.
        config: the export config used for the export; it generates the inputs for ``cases`` and
            names the outputs. Without one, pass ``input_batches`` (and, optionally, ``output_names``).
        cases: sizes of the generated input batches.
        input_batches: explicit inputs instead of generated ones, each a dict of arrays by input name.
        output_names: outputs to compare; defaults to the config's, else the model's tensor outputs.
        atol: absolute tolerance; defaults to ``config.atol``.
        providers: ONNX Runtime execution providers.
        raise_on_failure: raise :class:`~exporters.errors.ToleranceExceeded` when an output is out of
            tolerance; ``False`` returns the report either way (useful for int8 models).
        timeout_s: how long the worker may run.

    Raises:
        OrtLoadFailed, OrtRunFailed, OutputNamesMismatch, OutputShapeMismatch, ToleranceExceeded,
        ValidationWorkerFailed: see :mod:`exporters.errors`.

    Example:
        >>> import tempfile, pathlib
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> from exporters.onnx import export_onnx, export_config_for_model, validate_onnx
        >>> model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=4, intermediate_size=37, vocab_size=100))
        >>> config = export_config_for_model(model, "text-classification")
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
        >>> _ = export_onnx(model, None, path, config=config, dynamo=False)
        >>> report = validate_onnx(model, path, config)
        >>> report.passed, report.summary()["logits"]["argmax_agreement"]
        (True, 1.0)
    """
    started = time.perf_counter()
    onnx_path = Path(onnx_path)
    batches, case_info = _input_batches(config, cases, input_batches)
    input_names = config.input_names if config is not None else list(batches[0])
    forward_kwargs = config.FORWARD_KWARGS if config is not None else {}
    if atol is None:
        atol = config.atol if config is not None else FALLBACK_ATOL

    with eval_no_grad(model):
        names = _output_names(model, config, output_names, batches[0], input_names, forward_kwargs)
        wrapper = NamedOutputsModule(model, input_names, names, forward_kwargs)
        references = []
        for batch in batches:
            tensors = as_model_tensors(model, batch)
            references.append(wrapper(*(tensors[name] for name in input_names)))

    arrays, request_cases = _pack_cases(case_info, batches, references, input_names, names)
    request = {
        "onnx_path": str(onnx_path),
        "providers": list(providers),
        "expected_output_names": names,
        "argmax_outputs": [name for name in names if "logits" in name],
        "cases": request_cases,
    }
    result = run_worker(WORKER_SCRIPT, request, arrays, timeout_s)
    if not result.get("ok"):
        error = result.get("error", {})
        build = _WORKER_ERRORS.get(error.get("kind"))
        if build is None:
            raise errors.ValidationWorkerFailed(f"unknown failure {error!r}")
        raise build(str(onnx_path), error)

    diffs = [
        OutputDiff(
            case=case["case"],
            output_name=out["name"],
            shape=out["shape"],
            max_abs_diff=out["max_abs_diff"],
            max_rel_diff=out["max_rel_diff"],
            within_tolerance=out["max_abs_diff"] <= atol,
            argmax_agreement=out["argmax_agreement"],
            argmax_rows=out["argmax_rows"],
        )
        for case in result["cases"]
        for out in case["outputs"]
    ]
    report = ValidationReport(
        onnx_path=str(onnx_path),
        atol=atol,
        outputs=diffs,
        cases=case_info,
        ort_version=result.get("ort_version"),
        providers=result.get("providers", []),
        elapsed_s=time.perf_counter() - started,
    )
    logger.info("validated %s: %s", onnx_path, json.dumps(report.summary()))
    if raise_on_failure and not report.passed:
        raise errors.ToleranceExceeded(report)
    return report


def _pack_cases(
    case_info: list[dict[str, Any]],
    batches: list[dict[str, np.ndarray]],
    references: list[tuple[Any, ...]],
    input_names: list[str],
    output_names: list[str],
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Flatten inputs and references into one dict of arrays for the .npz; each case lists its keys."""
    arrays: dict[str, np.ndarray] = {}
    request_cases = []
    for index, (info, batch, outputs) in enumerate(zip(case_info, batches, references, strict=True)):
        inputs = {name: f"case{index}__in__{name}" for name in input_names}
        refs = {name: f"case{index}__ref__{name}" for name in output_names}
        arrays.update({inputs[name]: batch[name] for name in input_names})
        arrays.update({refs[name]: out.detach().cpu().numpy() for name, out in zip(output_names, outputs, strict=True)})
        request_cases.append({"name": info["name"], "inputs": inputs, "references": refs})
    return arrays, request_cases


def _input_batches(
    config: OnnxConfig | None,
    cases: Sequence[ValidationCase],
    input_batches: Sequence[Mapping[str, np.ndarray]] | None,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    if input_batches is not None:
        batches = [{name: np.asarray(value) for name, value in batch.items()} for batch in input_batches]
        if not batches:
            raise ValueError("input_batches is empty: give at least one batch of inputs")
        info = [
            {"name": f"input_batch={i}", "shapes": {k: list(v.shape) for k, v in batch.items()}}
            for i, batch in enumerate(batches)
        ]
        return batches, info
    if config is None:
        raise ValueError("validate_onnx needs a config to generate inputs, or explicit input_batches")
    batches = [
        config.generate_dummy_inputs(
            case.batch_size, case.sequence_length, padded=case.padded, seed=VALIDATION_SEED + index
        )
        for index, case in enumerate(cases)
    ]
    return batches, [{"name": case.name, **asdict(case)} for case in cases]


def _output_names(
    model: nn.Module,
    config: OnnxConfig | None,
    output_names: Sequence[str] | None,
    first_batch: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    forward_kwargs: Mapping[str, Any],
) -> list[str]:
    if output_names is not None:
        return list(output_names)
    if config is not None:
        return config.output_names
    tensors = as_model_tensors(model, {name: first_batch[name] for name in input_names})
    outputs = model(**tensors, **forward_kwargs)
    return list(infer_output_axes(outputs, sequence_length=None))


def run_worker(script: Path, request: dict[str, Any], arrays: dict[str, np.ndarray], timeout_s: float,
               failure: type[Exception] = errors.ValidationWorkerFailed) -> dict[str, Any]:
    """Run a validation worker script in a fresh interpreter on ``request`` (JSON) and ``arrays``
    (``.npz``) and return its JSON result; ``failure`` is raised when it times out or gives none."""
    with tempfile.TemporaryDirectory(prefix="exporters-validate-") as folder:
        request = {
            **request,
            "arrays_path": str(Path(folder) / "arrays.npz"),
            "result_path": str(Path(folder) / "result.json"),
        }
        np.savez(request["arrays_path"], **cast(dict[str, Any], arrays))  # numpy's stubs misread **kwargs
        request_path = Path(folder) / "request.json"
        request_path.write_text(json.dumps(request))
        command = [sys.executable, str(script), str(request_path)]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise failure(f"no result within {timeout_s:g} s") from err
        result_path = Path(request["result_path"])
        if completed.returncode != 0 or not result_path.exists():
            tail = (completed.stderr or completed.stdout or "").strip()[-2000:]
            raise failure(f"exit status {completed.returncode}: {tail}")
        if completed.stderr.strip():
            logger.debug("validation worker stderr: %s", completed.stderr.strip())
        return json.loads(result_path.read_text())
