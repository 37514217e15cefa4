"""Fake-quantized PyTorch becomes real int8 in ONNX Runtime: Q/DQ with our scales, int8 kernels,
and the measured agreement between the two."""

from __future__ import annotations

import copy
import doctest

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertForSequenceClassification

import exporters.onnx.qdq
from exporters.errors import UnsupportedQuantization
from exporters.onnx import export_config_for_model, export_qdq_onnx, measure_qdq_agreement
from hubcompress.compression import QATQuantizer, TorchEvaluator


def qat(model: nn.Module, config: list[dict], batches: list, step) -> QATQuantizer:
    def loop(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        for i in range(max_steps):
            optimizers.zero_grad()
            training_step(batches[i % len(batches)], model).backward()
            optimizers.step()

    model.train()
    quantizer = QATQuantizer(model, config, TorchEvaluator(loop, torch.optim.SGD(model.parameters(), lr=1e-3), step))
    quantizer.compress(max_steps=len(batches))
    return quantizer


def test_bert_int8_qdq_runs_int8_kernels_and_agrees_with_fake_quant(make_tiny_bert_config, tmp_path) -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(make_tiny_bert_config(num_labels=3))
    onnx_config = export_config_for_model(model, "text-classification")
    batches = [{k: torch.as_tensor(v) for k, v in onnx_config.generate_dummy_inputs(8, 12, seed=i).items()}
               for i in range(4)]
    config = [{"op_types": ["Linear"], "target_names": ["_input_", "weight"], "quant_dtype": "int8",
               "target_settings": {"weight": {"granularity": "per_channel"}}}]
    quantizer = qat(model, config, batches, lambda batch, m: m(**batch).logits.logsumexp(-1).mean())
    calibration = quantizer.get_calibration_config()
    reference = copy.deepcopy(model).eval()  # the fake-quantized PyTorch model
    quantizer.unwrap_model(bake=True)
    result = export_qdq_onnx(model.eval(), None, calibration, tmp_path / "model.qdq.onnx", config=onnx_config)
    assert result.qdq_op_counts["QuantizeLinear"] >= len(calibration)  # one per activation at least
    assert result.int8_op_counts.get("MatMulIntegerToFloat", 0) >= 12  # 6 Linears x 2 layers run in int8
    inputs = [onnx_config.generate_dummy_inputs(16, 10, padded=True, seed=100 + i) for i in range(3)]
    agreement = measure_qdq_agreement(reference, result.output_path, inputs, output_names=["logits"])
    assert agreement.rows["logits"] == 48
    assert agreement.max_abs_diff["logits"] < 2e-3  # logits of this random tiny model are about 0.03
    assert agreement.argmax_agreement["logits"] >= 0.9
    reference_fp32 = agreement.to_dict()  # plain data for the report
    assert set(reference_fp32) == {"max_abs_diff", "argmax_agreement", "rows"}


def test_fused_conv_bn_relu_exports_as_qlinearconv(conv_net, tmp_path) -> None:
    targets = {"target_names": ["_input_", "weight", "_output_"], "quant_dtype": "uint8",
               "target_settings": {"weight": {"quant_dtype": "int8", "granularity": "per_channel"}}}
    config = [{"op_types": ["Conv2d"], **targets, "fuse_names": [["conv1", "bn1", "relu"], ["conv3", "bn3"]]},
              {"op_names": ["fc"], **targets}]
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 3, 8, 8, generator=g) for _ in range(4)]
    quantizer = qat(conv_net, config, batches, lambda x, m: m(x).logsumexp(-1).mean())
    calibration = quantizer.get_calibration_config()
    reference = copy.deepcopy(conv_net).eval()
    quantizer.unwrap_model(bake=True)
    assert isinstance(conv_net.bn1, nn.Identity) and isinstance(conv_net.bn3, nn.Identity)
    result = export_qdq_onnx(conv_net.eval(), {"x": torch.randn(2, 3, 8, 8)}, calibration, tmp_path / "conv.onnx")
    assert result.int8_op_counts.get("QLinearConv", 0) == 3 and result.int8_op_counts.get("QGemm", 0) == 1
    inputs = [{"x": torch.randn(16, 3, 8, 8, generator=g).numpy()} for _ in range(2)]
    agreement = measure_qdq_agreement(reference, result.output_path, inputs, output_names=["output"])
    scale = float(calibration["fc"]["_output_"]["scale"])
    assert agreement.max_abs_diff["output"] <= 2 * scale + 1e-6  # at most a rounding step or two apart
    assert agreement.argmax_agreement["output"] >= 0.9


def test_unsupported_entries_raise(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    entry = {"scale": torch.tensor(0.1), "zero_point": torch.tensor(0), "quant_dtype": "int4"}
    with pytest.raises(UnsupportedQuantization, match="int4"):
        export_qdq_onnx(model, {"input": torch.randn(2, 3, 4)}, {"0": {"weight": entry}}, tmp_path / "m.onnx")
    entry = {"scale": torch.ones(2, 2) * 0.1, "zero_point": torch.zeros(2, 2), "quant_dtype": "int8"}
    with pytest.raises(UnsupportedQuantization, match="more than one axis"):
        export_qdq_onnx(model, {"input": torch.randn(2, 3, 4)}, {"0": {"weight": entry}}, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedQuantization, match="no such module"):
        export_qdq_onnx(model, {"input": torch.randn(2, 3, 4)}, {"bn1": {}}, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_qdq_docstring_example_runs() -> None:
    failures, tried = doctest.testmod(exporters.onnx.qdq, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def test_per_axis_blocks_repeat_out_to_the_axis() -> None:
    fn = exporters.onnx.qdq._fake_quant_fn("m", "weight", {"scale": torch.tensor([[0.1], [0.2]]),
                                                           "zero_point": torch.zeros(2, 1), "quant_dtype": "int8"})
    w = torch.full((4, 3), 0.33)
    out = fn(w)
    assert np.allclose(out[:2].numpy(), 0.3) and np.allclose(out[2:].numpy(), 0.4)
