"""The numbers a validation produces: per input case and output, how far ONNX Runtime is from PyTorch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class OutputDiff:
    """One output on one input case.

    ``max_rel_diff`` is the max abs diff divided by the largest reference magnitude of that
    output, so near-zero elements cannot blow it up. ``argmax_agreement`` (logits only) is the
    fraction of rows whose argmax over the last axis is the same in both runtimes.
    """

    case: str
    output_name: str
    shape: list[int]
    max_abs_diff: float
    max_rel_diff: float
    within_tolerance: bool
    argmax_agreement: float | None = None
    argmax_rows: int = 0


@dataclass
class ValidationReport:
    """Result of :func:`exporters.onnx.validate_onnx`; ``to_dict()`` is JSON-serialisable.

    Example:
        >>> from exporters.onnx.report import OutputDiff, ValidationReport
        >>> diff = OutputDiff("batch=1,seq=5", "logits", [1, 2], 3e-7, 1e-6, True, 1.0, 1)
        >>> report = ValidationReport("model.onnx", atol=1e-4, outputs=[diff])
        >>> report.passed, report.summary()["logits"]["argmax_agreement"]
        (True, 1.0)
    """

    onnx_path: str
    atol: float
    outputs: list[OutputDiff]
    cases: list[dict[str, Any]] = field(default_factory=list)
    ort_version: str | None = None
    providers: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        """Every output on every case is within ``atol``."""
        return all(diff.within_tolerance for diff in self.outputs)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per output, the worst diffs over all cases and the argmax agreement over all rows."""
        per_output: dict[str, dict[str, Any]] = {}
        for diff in self.outputs:
            entry = per_output.setdefault(
                diff.output_name,
                {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "within_tolerance": True, "_agree": 0.0, "_rows": 0},
            )
            entry["max_abs_diff"] = max(entry["max_abs_diff"], diff.max_abs_diff)
            entry["max_rel_diff"] = max(entry["max_rel_diff"], diff.max_rel_diff)
            entry["within_tolerance"] = entry["within_tolerance"] and diff.within_tolerance
            if diff.argmax_agreement is not None:
                entry["_agree"] += diff.argmax_agreement * diff.argmax_rows
                entry["_rows"] += diff.argmax_rows
        for entry in per_output.values():
            agree, rows = entry.pop("_agree"), entry.pop("_rows")
            entry["argmax_agreement"] = agree / rows if rows else None
        return per_output

    def to_dict(self) -> dict[str, Any]:
        """Plain data; infinities (a NaN mismatch) become the string ``"inf"`` so strict JSON parsers accept it."""
        data = asdict(self)
        data["passed"] = self.passed
        data["summary"] = self.summary()
        return _finite(data)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
