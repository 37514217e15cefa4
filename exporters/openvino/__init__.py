"""OpenVINO export for models already exported to ONNX: convert to IR, quantize to int8 with NNCF,
validate against PyTorch in a subprocess, and the file names a model folder keeps them under
(:mod:`exporters.openvino.file_names`).

Takes plain inputs (an ONNX file, calibration arrays, an ``nn.Module`` and its export config) and
never imports hubcompress. Needs ``openvino`` and, for int8, ``nncf`` (``pip install
'hubcompress[openvino]'``); importing this package does not import them.

Example:
    >>> import tempfile, pathlib
    >>> from transformers import BertConfig, BertModel
    >>> from exporters.onnx import export_onnx, export_config_for_model
    >>> from exporters.openvino import convert_onnx_to_openvino, quantize_openvino_int8, validate_openvino
    >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                              intermediate_size=37, vocab_size=100))
    >>> config = export_config_for_model(model)
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = export_onnx(model, None, folder / "model.onnx", config=config, dynamo=False)
    >>> fp32 = convert_onnx_to_openvino(folder / "model.onnx", folder / "openvino/openvino_model.xml")
    >>> validate_openvino(model, fp32.xml_path, config).passed
    True
    >>> samples = [config.generate_dummy_inputs(1, 8, seed=i) for i in range(4)]
    >>> int8 = quantize_openvino_int8(fp32.xml_path, folder / "openvino/openvino_model_qint8_quantized.xml",
    ...                               samples, show_progress=False)
    >>> report = validate_openvino(model, int8.int8_path, config, raise_on_failure=False)
    >>> report.summary()["last_hidden_state"]["max_abs_diff"] > 0
    True
"""

from __future__ import annotations

from exporters.openvino.convert import OpenVINOExportResult, convert_onnx_to_openvino, save_ir
from exporters.openvino.file_names import (
    OPENVINO_FILE_PATTERNS,
    OPENVINO_FP32,
    OPENVINO_INT8,
    OPENVINO_MODELS,
    openvino_files,
    weights_path,
)
from exporters.openvino.quantize import DEFAULT_CALIBRATION_SAMPLES, OpenVINOQuantizationResult, quantize_openvino_int8
from exporters.openvino.runtime import (
    RUNTIME_CONFIG,
    compile_config,
    compile_openvino,
    openvino_available,
    require_openvino,
)
from exporters.openvino.validate import OpenVINOValidationReport, validate_openvino

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "OPENVINO_FILE_PATTERNS",
    "OPENVINO_FP32",
    "OPENVINO_INT8",
    "OPENVINO_MODELS",
    "RUNTIME_CONFIG",
    "OpenVINOExportResult",
    "OpenVINOQuantizationResult",
    "OpenVINOValidationReport",
    "compile_config",
    "compile_openvino",
    "convert_onnx_to_openvino",
    "openvino_available",
    "quantize_openvino_int8",
    "require_openvino",
    "save_ir",
    "validate_openvino",
    "weights_path",
]
