from __future__ import annotations

import json

import onnxruntime as ort

import exporters.onnx.optimize as optimize_module
from exporters.onnx import optimize_graph, quantize_dynamic_int8, quantize_static_int8, validate_onnx


def test_dynamic_int8_runs_and_reports_argmax_agreement(bert_classifier, tmp_path) -> None:
    result = quantize_dynamic_int8(bert_classifier.path, tmp_path / "model_quantized.onnx")
    assert result.quantized_op_counts.get("MatMulInteger", 0) > 0
    assert result.size_ratio < 1.0
    report = validate_onnx(bert_classifier.model, result.int8_path, bert_classifier.config, raise_on_failure=False)
    logits = report.summary()["logits"]
    assert 0 < logits["max_abs_diff"] < 0.1  # int8 really changed the numbers, but not by much
    assert logits["argmax_agreement"] >= 0.75
    json.dumps({"quantization": result.to_dict(), "validation": report.to_dict()})


def test_static_int8_qdq_runs(bert_classifier, tmp_path) -> None:
    config = bert_classifier.config
    calibration = [config.generate_dummy_inputs(4, 12, padded=True, seed=100 + i) for i in range(4)]
    result = quantize_static_int8(bert_classifier.path, tmp_path / "model.qdq.onnx", calibration)
    assert result.quantized_op_counts["QuantizeLinear"] > 0 and result.quantized_op_counts["DequantizeLinear"] > 0
    report = validate_onnx(bert_classifier.model, result.int8_path, config, raise_on_failure=False)
    assert report.summary()["logits"]["argmax_agreement"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.qdq.onnx"]  # no temp or augmented files


def test_optimize_graph_counts_fused_ops_and_keeps_outputs(bert_features, tmp_path) -> None:
    result = optimize_graph(bert_features.path, tmp_path / "model.opt.onnx", "bert", num_heads=4, hidden_size=32)
    assert result.backend == "onnxruntime.transformers"
    assert result.fused_op_counts.get("SkipLayerNormalization", 0) > 0
    assert result.node_count_after < result.node_count_before
    report = validate_onnx(bert_features.model, result.output_path, bert_features.config)
    assert report.passed


def test_optimize_graph_falls_back_to_plain_ort_for_unknown_families(bert_features, tmp_path) -> None:
    result = optimize_graph(bert_features.path, tmp_path / "model.opt.onnx", "not-in-the-map", 4, 32)
    assert result.backend == "onnxruntime" and result.ort_model_type is None
    ort.InferenceSession(result.output_path, providers=["CPUExecutionProvider"])


def test_optimize_graph_falls_back_when_the_transformers_optimizer_crashes(
    monkeypatch, bert_features, tmp_path
) -> None:
    def crash(*args, **kwargs):
        raise IndexError("list index out of range")  # what its GPT-2 pass does on a bias-free Gemm

    monkeypatch.setattr(optimize_module, "_optimize_with_transformers_optimizer", crash)
    result = optimize_graph(bert_features.path, tmp_path / "model.opt.onnx", "bert", 4, 32)
    assert result.backend == "onnxruntime" and "IndexError" in result.fallback_reason
    assert validate_onnx(bert_features.model, result.output_path, bert_features.config).passed
