"""OpenVINO export of tiny models: ONNX -> IR (fp32), NNCF int8, the parity check in its own process,
one typed error per failure, the file names, and files written as a pair or not at all."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'hubcompress[openvino]'")
pytest.importorskip("nncf", reason="the openvino extra is not installed: pip install 'hubcompress[openvino]'")

from exporters import errors  # noqa: E402
from exporters.openvino import (  # noqa: E402
    OPENVINO_FILE_PATTERNS,
    OPENVINO_FP32,
    OPENVINO_INT8,
    RUNTIME_CONFIG,
    compile_openvino,
    convert_onnx_to_openvino,
    openvino_files,
    quantize_openvino_int8,
    require_openvino,
    validate_openvino,
)



WORKER = Path(errors.__file__).parent / "openvino" / "openvino_worker.py"
WORKER_ALLOWED_IMPORTS = {"__future__", "importlib", "json", "logging", "sys", "time", "pathlib", "typing", "numpy",
                          "openvino"}


def _ir(exported: Any, folder: Path) -> Path:  # exported: conftest.Exported
    return Path(convert_onnx_to_openvino(exported.path, folder / OPENVINO_FP32).xml_path)


def _samples(exported: Any, count: int = 6) -> list[dict[str, np.ndarray]]:
    # One text each, of varied lengths, as the export stage hands them over.
    return [exported.config.generate_dummy_inputs(1, 4 + index, seed=index) for index in range(count)]


def test_fp32_ir_keeps_the_onnx_names_and_matches_pytorch(bert_features: Any, tmp_path: Path) -> None:
    result = convert_onnx_to_openvino(bert_features.path, tmp_path / OPENVINO_FP32)
    assert result.input_names == bert_features.result.input_names
    assert result.output_names == bert_features.result.output_names
    assert sorted(openvino_files(tmp_path)) == ["openvino/openvino_model.bin", "openvino/openvino_model.xml"]
    report = validate_openvino(bert_features.model, result.xml_path, bert_features.config)
    summary = report.summary()
    assert report.passed and set(summary) == {"last_hidden_state", "pooler_output"}
    assert all(0 <= entry["max_abs_diff"] < 1e-4 for entry in summary.values())  # a number per output, not pass/fail
    assert report.inference_precision == "f32" and report.openvino_version
    assert {case["name"] for case in report.cases} == {"batch=1,seq=5", "batch=3,seq=11,padded", "batch=4,seq=16"}
    assert report.to_dict()["passed"] is True


def test_weights_are_written_in_fp32(bert_features: Any, tmp_path: Path) -> None:
    # openvino.save_model halves weights to fp16 unless told not to: the .bin must hold every fp32 weight.
    xml = _ir(bert_features, tmp_path)
    weight_bytes = sum(p.numel() * 4 for p in bert_features.model.parameters())
    assert xml.with_suffix(".bin").stat().st_size >= 0.95 * weight_bytes


def test_int8_is_smaller_and_agrees_with_pytorch(bert_classifier: Any, tmp_path: Path) -> None:
    xml = _ir(bert_classifier, tmp_path)
    result = quantize_openvino_int8(xml, tmp_path / OPENVINO_INT8, _samples(bert_classifier), show_progress=False)
    assert result.samples == 6 and result.int8_bytes < result.fp32_bytes and result.model_type == "transformer"
    assert openvino_files(tmp_path) == list(OPENVINO_FILE_PATTERNS)
    report = validate_openvino(bert_classifier.model, result.int8_path, bert_classifier.config, raise_on_failure=False)
    summary = report.summary()["logits"]
    assert summary["max_abs_diff"] > 0 and summary["argmax_agreement"] >= 0.75


def test_calibration_uses_at_most_max_samples_and_drops_unknown_inputs(bert_features: Any, tmp_path: Path) -> None:
    xml = _ir(bert_features, tmp_path)
    samples = [{**sample, "labels": np.zeros(1, np.int64)} for sample in _samples(bert_features, 5)]
    result = quantize_openvino_int8(xml, tmp_path / OPENVINO_INT8, samples, max_samples=3, show_progress=False)
    assert result.samples == 3
    with pytest.raises(ValueError, match="at least one calibration input"):
        quantize_openvino_int8(xml, tmp_path / "other.xml", [], show_progress=False)


def test_compiled_models_run_in_f32(bert_features: Any, tmp_path: Path) -> None:
    # The CPU plugin's default is bf16 wherever the CPU has it; the validated numbers are f32.
    compiled = compile_openvino(_ir(bert_features, tmp_path), threads=1)
    assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == RUNTIME_CONFIG["INFERENCE_PRECISION_HINT"]
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_a_tolerance_failure_is_its_own_type_with_the_numbers(bert_features: Any, tmp_path: Path) -> None:
    xml = _ir(bert_features, tmp_path)
    with pytest.raises(errors.OpenVINOToleranceExceeded) as caught:
        validate_openvino(bert_features.model, xml, bert_features.config, atol=1e-12)
    assert isinstance(caught.value, errors.ToleranceExceeded) and caught.value.failing
    assert "max abs diff" in str(caught.value) and "atol=1e-12" in str(caught.value)


def test_wrong_output_names_are_reported(bert_features: Any, tmp_path: Path) -> None:
    xml = _ir(bert_features, tmp_path)
    with pytest.raises(errors.OutputNamesMismatch):
        validate_openvino(bert_features.model, xml, bert_features.config, output_names=["last_hidden_state"])


def test_a_missing_weights_file_is_a_load_failure(bert_features: Any, tmp_path: Path) -> None:
    xml = _ir(bert_features, tmp_path)
    xml.with_suffix(".bin").unlink()
    assert openvino_files(tmp_path) == []
    with pytest.raises(errors.OpenVINOLoadFailed, match="cannot load"):
        validate_openvino(bert_features.model, xml, bert_features.config)
    with pytest.raises(errors.OpenVINOLoadFailed):
        compile_openvino(xml)


def test_a_bad_onnx_file_fails_to_convert_and_leaves_the_old_ir(bert_features: Any, tmp_path: Path) -> None:
    xml = _ir(bert_features, tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in openvino_files(tmp_path)}
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(errors.OpenVINOConvertFailed, match="broken.onnx"):
        convert_onnx_to_openvino(broken, xml)
    assert {name: (tmp_path / name).read_bytes() for name in openvino_files(tmp_path)} == before
    assert not [p.name for p in (tmp_path / "openvino").iterdir() if p.name.startswith(".")]  # no temporaries


def test_published_files_are_readable(bert_features: Any, tmp_path: Path) -> None:
    _ir(bert_features, tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    for name in openvino_files(tmp_path):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    require_openvino()  # openvino alone is enough for the fp32 IR
    with pytest.raises(errors.OpenVINONotInstalled, match=r"hubcompress\[openvino\]") as caught:
        require_openvino(int8=True)
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, errors.ExportError)


def test_the_worker_stays_light_and_runs_by_path() -> None:
    tree = ast.parse(WORKER.read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name.split(".")[0] for name in modules} <= WORKER_ALLOWED_IMPORTS
