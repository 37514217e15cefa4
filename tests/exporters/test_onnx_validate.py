from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import BertForSequenceClassification

from exporters.errors import (
    OrtLoadFailed,
    OrtRunFailed,
    OutputNamesMismatch,
    OutputShapeMismatch,
    ToleranceExceeded,
    ValidationWorkerFailed,
)
from exporters.onnx import ValidationCase, validate_onnx

# Export used batch 2, sequence 8: every case here differs, and one is padded.
CASES = (ValidationCase(1, 5), ValidationCase(3, 11, padded=True), ValidationCase(4, 16, padded=True))


def test_bert_features_match_on_other_shapes_and_padded_batches(bert_features) -> None:
    report = validate_onnx(bert_features.model, bert_features.path, bert_features.config, cases=CASES)
    assert report.passed
    assert [case["name"] for case in report.cases] == [
        "batch=1,seq=5",
        "batch=3,seq=11,padded",
        "batch=4,seq=16,padded",
    ]
    assert len(report.outputs) == len(CASES) * 2
    shapes = {(d.case, d.output_name): d.shape for d in report.outputs}
    assert shapes[("batch=3,seq=11,padded", "last_hidden_state")] == [3, 11, 32]
    assert shapes[("batch=4,seq=16,padded", "pooler_output")] == [4, 32]
    summary = report.summary()
    assert summary["last_hidden_state"]["max_abs_diff"] < 1e-5
    assert summary["pooler_output"]["argmax_agreement"] is None  # only logits get argmax agreement
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is True and data["summary"]["pooler_output"]["max_rel_diff"] < 1e-4


def test_classifier_reports_argmax_agreement(bert_classifier) -> None:
    report = validate_onnx(bert_classifier.model, bert_classifier.path, bert_classifier.config)
    logits = report.summary()["logits"]
    assert logits["argmax_agreement"] == 1.0 and logits["max_abs_diff"] < 1e-5
    assert sum(d.argmax_rows for d in report.outputs) == 1 + 3 + 4  # one row per example


def test_distilbert_exports_and_validates(distilbert_features) -> None:
    assert distilbert_features.result.input_names == ["input_ids", "attention_mask"]
    report = validate_onnx(distilbert_features.model, distilbert_features.path, distilbert_features.config, cases=CASES)
    assert report.passed and report.summary()["last_hidden_state"]["max_abs_diff"] < 1e-5


def test_perturbed_model_exceeds_tolerance_and_the_error_carries_the_diffs(bert_classifier) -> None:
    perturbed = copy.deepcopy(bert_classifier.model)
    with torch.no_grad():
        perturbed.classifier.bias.add_(0.5)
    with pytest.raises(ToleranceExceeded) as caught:
        validate_onnx(perturbed, bert_classifier.path, bert_classifier.config, atol=0.0)
    error = caught.value
    assert error.failing and all(d.output_name == "logits" for d in error.failing)
    assert error.report.summary()["logits"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    assert "atol=0" in str(error) and "logits" in str(error)


def test_same_numbers_without_raising(bert_classifier) -> None:
    report = validate_onnx(
        bert_classifier.model, bert_classifier.path, bert_classifier.config, atol=0.0, raise_on_failure=False
    )
    assert report.atol == 0.0 and report.outputs  # passed or not, the numbers are there


def test_corrupt_file_is_an_ort_load_failure(bert_classifier, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(bert_classifier.path.read_bytes()[:1000])
    with pytest.raises(OrtLoadFailed, match="corrupt.onnx"):
        validate_onnx(bert_classifier.model, corrupt, bert_classifier.config)


def test_output_names_must_match_the_graph(bert_features) -> None:
    with pytest.raises(OutputNamesMismatch) as caught:
        validate_onnx(bert_features.model, bert_features.path, bert_features.config, output_names=["last_hidden_state"])
    assert caught.value.actual == ["last_hidden_state", "pooler_output"]
    assert "pooler_output" in str(caught.value)


def test_output_shape_must_match_pytorch(bert_classifier, make_tiny_bert_config) -> None:
    torch.manual_seed(3)
    four_labels = BertForSequenceClassification(make_tiny_bert_config(num_labels=4))  # the export has 3
    with pytest.raises(OutputShapeMismatch) as caught:
        validate_onnx(four_labels, bert_classifier.path, bert_classifier.config)
    assert caught.value.output_name == "logits"
    assert caught.value.expected[-1] == 4 and caught.value.actual[-1] == 3


def test_wrong_input_dtype_is_an_ort_run_failure(bert_classifier) -> None:
    # PyTorch embeddings take int32 ids; the exported graph takes int64 only.
    batch = {k: v.astype("int32") for k, v in bert_classifier.config.generate_dummy_inputs(2, 4).items()}
    with pytest.raises(OrtRunFailed, match="input_batch=0"):
        validate_onnx(bert_classifier.model, bert_classifier.path, bert_classifier.config, input_batches=[batch])


def test_worker_timeout_is_reported(bert_classifier) -> None:
    with pytest.raises(ValidationWorkerFailed, match="no result within"):
        validate_onnx(bert_classifier.model, bert_classifier.path, bert_classifier.config, timeout_s=0.01)
