from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import exporters.onnx.export as export_module
from exporters.errors import OnnxCheckerFailed, OnnxExportFailed
from exporters.onnx import export_onnx, get_export_config, validate_onnx


def graph_dims(path: Path) -> dict[str, list[str | int]]:
    model = onnx.load(str(path))
    values = list(model.graph.input) + list(model.graph.output)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_dynamo_export_has_named_dynamic_axes(bert_features) -> None:
    result = bert_features.result
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert result.opset == 17
    assert result.output_names == ["last_hidden_state", "pooler_output"]
    dims = graph_dims(bert_features.path)
    assert dims["input_ids"] == ["batch", "sequence"]
    assert dims["last_hidden_state"] == ["batch", "sequence", 32]
    assert dims["pooler_output"] == ["batch", 32]
    assert json.loads(json.dumps(result.to_dict()))["file_size_bytes"] == bert_features.path.stat().st_size


def _dynamo_raises(path: Path) -> None:
    raise RuntimeError("simulated torch.export failure")


def _dynamo_writes_an_invalid_graph(path: Path) -> None:
    path.write_bytes(b"not a protobuf")  # what a broken opset down-conversion looks like to the checker


@pytest.mark.parametrize("dynamo_failure", [_dynamo_raises, _dynamo_writes_an_invalid_graph])
def test_falls_back_to_torchscript_when_dynamo_fails(monkeypatch, bert_classifier, tmp_path, dynamo_failure) -> None:
    real_exporter = export_module._run_torch_exporter

    def dynamo_breaks(name, wrapper, args, path, *rest):
        if name == "dynamo":
            return dynamo_failure(path)
        return real_exporter(name, wrapper, args, path, *rest)

    monkeypatch.setattr(export_module, "_run_torch_exporter", dynamo_breaks)
    result = export_onnx(bert_classifier.model, None, tmp_path / "model.onnx", config=bert_classifier.config)
    assert result.exporter == "torchscript"
    assert result.fallback_reason and ("simulated" in result.fallback_reason or "invalid" in result.fallback_reason)
    report = validate_onnx(bert_classifier.model, result.output_path, bert_classifier.config)
    assert report.passed and report.summary()["logits"]["argmax_agreement"] == 1.0


def test_prefer_torchscript_tries_it_first_and_falls_back_to_dynamo(monkeypatch, bert_classifier, tmp_path) -> None:
    real_exporter = export_module._run_torch_exporter
    tried = []

    def torchscript_breaks(name, wrapper, args, path, *rest):
        tried.append(name)
        if name == "torchscript" and len(tried) == 1:
            raise RuntimeError("simulated TorchScript failure")
        return real_exporter(name, wrapper, args, path, *rest)

    first = export_onnx(bert_classifier.model, None, tmp_path / "a.onnx", config=bert_classifier.config,
                        prefer="torchscript")
    assert first.exporter == "torchscript" and first.fallback_reason is None
    monkeypatch.setattr(export_module, "_run_torch_exporter", torchscript_breaks)
    second = export_onnx(bert_classifier.model, None, tmp_path / "b.onnx", config=bert_classifier.config,
                         prefer="torchscript")
    assert tried == ["torchscript", "dynamo"]
    assert second.exporter == "dynamo" and "simulated TorchScript failure" in second.fallback_reason


class RaisesInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:  # the eager check passes, every exporter trace fails
            raise RuntimeError("cannot be traced")
        return self.linear(x)


def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous good export")
    with pytest.raises(OnnxExportFailed) as caught:
        export_onnx(RaisesInForward(), {"x": torch.randn(2, 3, 4)}, target)
    assert set(caught.value.attempts) == {"dynamo", "torchscript"}
    assert target.read_bytes() == b"previous good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp files left


def test_checker_failure_leaves_no_file(monkeypatch, tmp_path) -> None:
    def reject(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated invalid graph")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(OnnxCheckerFailed, match="simulated invalid graph"):
        export_onnx(nn.Linear(4, 2), {"input": torch.randn(3, 4)}, tmp_path / "out" / "model.onnx", dynamo=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_model_that_fails_eagerly_is_reported_before_exporting(tmp_path) -> None:
    with pytest.raises(OnnxExportFailed, match="fails on the example inputs"):
        export_onnx(nn.Linear(4, 2), {"input": torch.randn(3, 5)}, tmp_path / "model.onnx", dynamo=False)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.embed(tokens)
        return {"hidden": hidden, "logits": self.head(hidden.mean(dim=1))}


def test_export_without_config_infers_names_and_axes(tmp_path) -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    result = export_onnx(model, {"tokens": torch.randint(0, 20, (2, 6))}, tmp_path / "m.onnx", dynamo=False)
    assert result.output_names == ["hidden", "logits"]
    assert result.dynamic_axes["hidden"] == {0: "batch", 1: "sequence"}
    assert result.dynamic_axes["logits"] == {0: "batch"}
    batches = [
        {"tokens": np.random.default_rng(i).integers(0, 20, (b, s))} for i, (b, s) in enumerate([(1, 3), (5, 9)])
    ]
    report = validate_onnx(model, result.output_path, input_batches=batches)
    assert report.passed and {d.output_name for d in report.outputs} == {"hidden", "logits"}


def test_missing_example_input_for_config_is_a_clear_error(tmp_path) -> None:
    config = get_export_config("bert")
    with pytest.raises(ValueError, match="token_type_ids"):
        export_onnx(
            nn.Identity(),
            {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3, dtype=torch.long)},
            tmp_path / "m.onnx",
            config=config,
        )
