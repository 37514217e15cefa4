"""ONNX export for PyTorch models: export, validate in a subprocess, quantize to int8, fuse the graph,
and the file names a model folder keeps them under (:mod:`exporters.onnx.file_names`).

Takes plain inputs (an ``nn.Module`` and example inputs) and never imports hubcompress.

Example:
    >>> import tempfile, pathlib
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from exporters.onnx import export_onnx, export_config_for_model, validate_onnx, quantize_dynamic_int8
    >>> model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1,
    ...     num_attention_heads=4, intermediate_size=37, vocab_size=100))
    >>> config = export_config_for_model(model, "text-classification")
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> exported = export_onnx(model, None, folder / "model.onnx", config=config)
    >>> report = validate_onnx(model, exported.output_path, config)
    >>> int8 = quantize_dynamic_int8(folder / "model.onnx", folder / "model_quantized.onnx")
    >>> int8_report = validate_onnx(model, int8.int8_path, config, raise_on_failure=False)
    >>> report.passed, exported.exporter
    (True, 'dynamo')
"""

from __future__ import annotations

from exporters.onnx import model_configs  # noqa: F401  (registers the built-in export configs)
from exporters.onnx.export import ExportResult, export_onnx
from exporters.onnx.file_names import (
    ONNX_FILE_PATTERNS,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_INT8_ALIASES,
    ONNX_OPTIMIZED,
    int8_weight_type,
    onnx_files,
    write_int8_aliases,
)
from exporters.onnx.optimize import GraphOptimizationResult, optimize_graph
from exporters.onnx.qdq import (
    QdqAgreement,
    QdqExportResult,
    export_qdq_onnx,
    fake_quantized,
    measure_qdq_agreement,
    ort_int8_op_counts,
)
from exporters.onnx.quantize import QuantizationResult, quantize_dynamic_int8, quantize_static_int8
from exporters.onnx.registry import (
    OnnxConfig,
    export_config_for_model,
    get_export_config,
    register_export_config,
    registered_export_configs,
)
from exporters.onnx.report import OutputDiff, ValidationReport
from exporters.onnx.validate import DEFAULT_VALIDATION_CASES, ValidationCase, validate_onnx

__all__ = [
    "DEFAULT_VALIDATION_CASES",
    "ONNX_FILE_PATTERNS",
    "ONNX_FP32",
    "ONNX_INT8",
    "ONNX_INT8_ALIASES",
    "ONNX_OPTIMIZED",
    "ExportResult",
    "GraphOptimizationResult",
    "OnnxConfig",
    "OutputDiff",
    "QdqAgreement",
    "QdqExportResult",
    "QuantizationResult",
    "ValidationCase",
    "ValidationReport",
    "export_config_for_model",
    "export_onnx",
    "export_qdq_onnx",
    "fake_quantized",
    "get_export_config",
    "int8_weight_type",
    "measure_qdq_agreement",
    "onnx_files",
    "optimize_graph",
    "ort_int8_op_counts",
    "quantize_dynamic_int8",
    "quantize_static_int8",
    "register_export_config",
    "registered_export_configs",
    "validate_onnx",
    "write_int8_aliases",
]
