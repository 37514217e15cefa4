"""The int8 file's weight type, read from the graph of each quantizer's output, and the aliases
that consumers (transformers.js ``dtype: "int8"`` / ``"uint8"``) look for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from exporters.onnx import (
    ONNX_FILE_PATTERNS,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_INT8_ALIASES,
    export_qdq_onnx,
    int8_weight_type,
    onnx_files,
    quantize_dynamic_int8,
    quantize_static_int8,
    write_int8_aliases,
)


def linear_calibration(model: nn.Module, weight_dtype: str) -> dict:
    """Q/DQ on every Linear's input and weight, the weights as ``weight_dtype``."""
    weight_zero = 0 if weight_dtype == "int8" else 128
    return {name: {"_input_": {"scale": torch.tensor(0.05), "zero_point": torch.tensor(0), "quant_dtype": "int8"},
                   "weight": {"scale": torch.tensor(0.01), "zero_point": torch.tensor(weight_zero),
                              "quant_dtype": weight_dtype}}
            for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def weights_graph(path: Path, weight_types: dict[str, int]) -> Path:
    """x @ w for each weight (DequantizeLinear of a constant of the given element type, then MatMul),
    plus a uint8 embedding table behind a Gather, as ONNX Runtime quantizes those."""
    nodes, initializers, outputs = [], [], []
    for name, element_type in weight_types.items():
        initializers += [helper.make_tensor(name, element_type, [4, 2], [1] * 8),
                         numpy_helper.from_array(np.array(0.1, np.float32), f"{name}_scale"),
                         helper.make_tensor(f"{name}_zero", element_type, [], [0])]
        nodes += [helper.make_node("DequantizeLinear", [name, f"{name}_scale", f"{name}_zero"], [f"{name}_float"]),
                  helper.make_node("MatMul", ["x", f"{name}_float"], [f"{name}_out"])]
        outputs.append(helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 2]))
    initializers += [numpy_helper.from_array(np.ones((10, 4), np.uint8), "table"),
                     numpy_helper.from_array(np.array(0.1, np.float32), "table_scale"),
                     numpy_helper.from_array(np.array(128, np.uint8), "table_zero")]
    nodes += [helper.make_node("DequantizeLinear", ["table", "table_scale", "table_zero"], ["table_float"]),
              helper.make_node("Gather", ["table_float", "ids"], ["embedded"])]
    outputs.append(helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [1, 4]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
              helper.make_tensor_value_info("ids", TensorProto.INT64, [1])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)), path)
    return path


def test_ort_dynamic_quantization_weight_types(bert_features, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert int8_weight_type(bert_features.path) is None  # fp32: nothing quantized
    # Its embedding tables are uint8 whatever the weight type; the MatMulInteger weights decide.
    quantize_dynamic_int8(bert_features.path, tmp_path / "int8.onnx")
    assert int8_weight_type(tmp_path / "int8.onnx") == "int8"
    quantize_dynamic_int8(bert_features.path, tmp_path / "per_channel.onnx", per_channel=True)
    assert int8_weight_type(tmp_path / "per_channel.onnx") == "int8"
    quantize_dynamic(bert_features.path, tmp_path / "uint8.onnx", weight_type=QuantType.QUInt8)
    assert int8_weight_type(tmp_path / "uint8.onnx") == "uint8"


def test_ort_static_qdq_weight_type(bert_features, tmp_path: Path) -> None:
    batches = [bert_features.config.generate_dummy_inputs(2, 8, seed=i) for i in range(2)]
    # Activations are uint8 Q/DQ pairs and biases int32: neither counts.
    quantize_static_int8(bert_features.path, tmp_path / "qdq.onnx", batches)
    assert int8_weight_type(tmp_path / "qdq.onnx") == "int8"


@pytest.mark.parametrize("weight_dtype", ["int8", "uint8"])
def test_our_qdq_export_weight_type(bert_features, tmp_path: Path, weight_dtype: str) -> None:
    model = bert_features.model
    path = tmp_path / "qdq.onnx"
    export_qdq_onnx(model, None, linear_calibration(model, weight_dtype), path, config=bert_features.config)
    assert int8_weight_type(path) == weight_dtype


def test_our_qdq_export_of_a_conv_net(conv_net, tmp_path: Path) -> None:
    weight = {"scale": torch.tensor(0.01), "zero_point": torch.tensor(0), "quant_dtype": "int8"}
    calibration = {"conv1": {"weight": weight}, "fc": {"weight": weight}}
    export_qdq_onnx(conv_net, {"x": torch.randn(2, 3, 8, 8)}, calibration, tmp_path / "conv.onnx")
    assert int8_weight_type(tmp_path / "conv.onnx") == "int8"


def test_mixed_weight_types_get_no_alias(tmp_path: Path) -> None:
    assert int8_weight_type(weights_graph(tmp_path / "a.onnx", {"w": TensorProto.INT8})) == "int8"
    assert int8_weight_type(weights_graph(tmp_path / "b.onnx", {"w": TensorProto.UINT8})) == "uint8"
    mixed = weights_graph(tmp_path / "c.onnx", {"w": TensorProto.INT8, "v": TensorProto.UINT8})
    assert int8_weight_type(mixed) is None
    assert int8_weight_type(weights_graph(tmp_path / "d.onnx", {"w": TensorProto.INT4})) is None


def test_aliases_follow_the_int8_file(bert_features, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = tmp_path / "out"
    (folder / "onnx").mkdir(parents=True)
    (folder / ONNX_FP32).write_bytes(bert_features.path.read_bytes())
    with pytest.raises(FileNotFoundError, match="model_quantized.onnx"):
        write_int8_aliases(folder)
    quantize_dynamic_int8(folder / ONNX_FP32, folder / ONNX_INT8)
    assert write_int8_aliases(folder) == ["onnx/model_int8.onnx"]
    assert (folder / "onnx/model_int8.onnx").read_bytes() == (folder / ONNX_INT8).read_bytes()
    assert onnx_files(folder) == [ONNX_FP32, ONNX_INT8, "onnx/model_int8.onnx"]

    # A uint8 file replacing it: the int8 alias would now lie, so it goes.
    quantize_dynamic(folder / ONNX_FP32, folder / ONNX_INT8, weight_type=QuantType.QUInt8)
    assert write_int8_aliases(folder) == ["onnx/model_uint8.onnx"]
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == ["model.onnx", "model_quantized.onnx",
                                                                    "model_uint8.onnx"]  # no temp files either
    assert set(onnx_files(folder)) <= set(ONNX_FILE_PATTERNS) and set(ONNX_INT8_ALIASES.values()) <= set(
        ONNX_FILE_PATTERNS)
