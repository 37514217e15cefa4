"""One exception type per way an export can fail.

Every error says what failed, where, and what to do next, so a caller can catch
:class:`ExportError` for "any export problem" or a subclass to react to one kind.

Example:
    >>> from exporters.errors import ExportError, OrtLoadFailed
    >>> try:
    ...     raise OrtLoadFailed("model.onnx", "not a protobuf file")
    ... except ExportError as err:
    ...     print(type(err).__name__)
    OrtLoadFailed
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: errors must import cheaply and without cycles
    from exporters.onnx.report import OutputDiff, ValidationReport


class ExportError(Exception):
    """Base class of every error raised by :mod:`exporters`."""


class UnsupportedModelType(ExportError, KeyError):
    """No export config is registered for this ``model_type`` (or this task of it)."""

    def __init__(self, model_type: str, task: str | None, known: Sequence[str]) -> None:
        self.model_type = model_type
        self.task = task
        self.known = list(known)
        what = f"model_type {model_type!r}" if task is None else f"task {task!r} of model_type {model_type!r}"
        super().__init__(
            f"No ONNX export config is registered for {what}. Known: {', '.join(self.known) or 'none'}. "
            "To add one, subclass exporters.onnx.OnnxConfig and decorate it with "
            f"@register_export_config({model_type!r}), listing its tasks in SUPPORTED_TASKS."
        )

    # KeyError.__str__ would wrap the message in quotes
    __str__ = Exception.__str__


class OnnxExportFailed(ExportError):
    """Neither the dynamo nor the TorchScript exporter produced a model."""

    def __init__(self, message: str, attempts: dict[str, str] | None = None) -> None:
        self.attempts = dict(attempts or {})
        details = "".join(f"\n  {name}: {reason}" for name, reason in self.attempts.items())
        super().__init__(message + details)


class OnnxCheckerFailed(ExportError):
    """The exported graph does not pass ``onnx.checker.check_model``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: the exported ONNX graph is invalid ({reason}). "
            "Try another opset or the other exporter (export_onnx(..., dynamo=False))."
        )


class OrtLoadFailed(ExportError):
    """ONNX Runtime could not create an inference session from the file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: ONNX Runtime cannot load the model ({reason}). "
            "Check that the file is complete and that the opset is supported by the installed onnxruntime."
        )


class OrtRunFailed(ExportError):
    """ONNX Runtime loaded the model but failed to run it on an input case."""

    def __init__(self, path: str, case: str, reason: str) -> None:
        self.path = path
        self.case = case
        super().__init__(
            f"{path}: ONNX Runtime failed on case {case} ({reason}). "
            "Check the input names and dtypes and that the exported axes are dynamic."
        )


class OutputNamesMismatch(ExportError):
    """The ONNX graph's outputs are not the ones the export config expects."""

    def __init__(self, path: str, expected: Sequence[str], actual: Sequence[str]) -> None:
        self.path = path
        self.expected = list(expected)
        self.actual = list(actual)
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        super().__init__(
            f"{path}: output names {self.actual} do not match the expected {self.expected} "
            f"(missing {missing}, unexpected {extra}). Export again with the same config you validate with."
        )


class OutputShapeMismatch(ExportError):
    """An ONNX output has a different shape from the PyTorch reference."""

    def __init__(self, path: str, case: str, output_name: str, expected: Sequence[int], actual: Sequence[int]) -> None:
        self.path = path
        self.case = case
        self.output_name = output_name
        self.expected = list(expected)
        self.actual = list(actual)
        super().__init__(
            f"{path}: output {output_name!r} has shape {self.actual} on case {case}, PyTorch gives {self.expected}. "
            "An axis was probably exported as a constant: mark it dynamic in the export config."
        )


class ToleranceExceeded(ExportError):
    """Some ONNX outputs differ from PyTorch by more than the absolute tolerance."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        self.failing: list[OutputDiff] = [diff for diff in report.outputs if not diff.within_tolerance]
        worst = ", ".join(f"{d.output_name!r} on {d.case}: max abs diff {d.max_abs_diff:.3g}" for d in self.failing[:5])
        super().__init__(
            f"{report.onnx_path}: {len(self.failing)} output(s) exceed atol={report.atol:g} ({worst}). "
            "If the gap is expected (int8, fp16), validate with a larger atol; otherwise look for an op "
            "that ONNX Runtime computes differently from PyTorch."
        )


class ValidationWorkerFailed(ExportError):
    """The validation subprocess crashed, timed out, or returned no result."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"The ONNX validation subprocess failed: {reason}")


class UnsupportedQuantization(ExportError):
    """A calibration entry cannot be written as ONNX QuantizeLinear / DequantizeLinear."""

    def __init__(self, module: str, target: str, reason: str) -> None:
        self.module = module
        self.target = target
        super().__init__(
            f"{module}.{target}: {reason}. Export only 8-bit targets (quant_dtype 'int8' or 'uint8') with a "
            "per-tensor or per-axis scale, or leave this target out of the calibration config."
        )


# --- OpenVINO (exporters.openvino) -----------------------------------------------------------------
class OpenVINONotInstalled(ExportError, ImportError):
    """``openvino`` (or ``nncf``, for int8) is not installed."""

    def __init__(self, package: str) -> None:
        self.package = package
        super().__init__(
            f"OpenVINO export needs the {package!r} package, which is not installed. "
            "Install the extra: pip install 'hubcompress[openvino]' (openvino and nncf)."
        )


class OpenVINOConvertFailed(ExportError):
    """``openvino.convert_model`` could not turn the ONNX file into OpenVINO IR."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        super().__init__(
            f"{source}: OpenVINO cannot convert the model ({reason}). Check that the ONNX file loads in ONNX "
            "Runtime first (exporters.onnx.validate_onnx), then try another opset or exporter for it."
        )


class OpenVINOQuantizationFailed(ExportError):
    """NNCF could not quantize the OpenVINO model to int8."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: NNCF int8 quantization failed ({reason}). Check that the calibration inputs are named like "
            "the model's inputs and are int64 token arrays; the fp32 IR next to it is unaffected."
        )


class OpenVINOLoadFailed(ExportError):
    """OpenVINO could not read or compile the IR (.xml + .bin) for the CPU."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: OpenVINO cannot load the model ({reason}). Check that the .bin file sits next to the .xml "
            "with the same name and that the installed openvino is at least the version that wrote it."
        )


class OpenVINORunFailed(ExportError):
    """OpenVINO compiled the model but failed to run it on an input case."""

    def __init__(self, path: str, case: str, reason: str) -> None:
        self.path = path
        self.case = case
        super().__init__(
            f"{path}: OpenVINO failed on case {case} ({reason}). Check the input names and dtypes and that the "
            "batch and sequence axes of the IR are dynamic."
        )


class OpenVINOToleranceExceeded(ToleranceExceeded):
    """Some OpenVINO outputs differ from PyTorch by more than the absolute tolerance."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        self.failing = [diff for diff in report.outputs if not diff.within_tolerance]
        worst = ", ".join(f"{d.output_name!r} on {d.case}: max abs diff {d.max_abs_diff:.3g}" for d in self.failing[:5])
        ExportError.__init__(
            self,
            f"{report.onnx_path}: {len(self.failing)} output(s) exceed atol={report.atol:g} ({worst}). OpenVINO "
            "runs in f32 here (exporters.openvino.RUNTIME_CONFIG); if the ONNX file passes the same check, an op is "
            "converted differently: report it to OpenVINO, or validate with a larger atol.",
        )


class OpenVINOValidationWorkerFailed(ValidationWorkerFailed):
    """The OpenVINO validation subprocess crashed, timed out, or returned no result."""

    def __init__(self, reason: str) -> None:
        ExportError.__init__(self, f"The OpenVINO validation subprocess failed: {reason}")
