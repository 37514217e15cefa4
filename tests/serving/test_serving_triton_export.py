"""The Triton model repository: config.pbtxt parsed back and compared with the ONNX graph itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
import pytest
from typer.testing import CliRunner

from exporters.onnx import ONNX_FP32, ONNX_INT8
from hubcompress.cli import app as cli_app
from hubcompress.serving import export_triton_repository

from .served_folders import LABELS, ServedFolder

# ONNX element types -> Triton data types, written out here independently of the code under test.
TRITON_TYPES = {onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.FLOAT: "TYPE_FP32"}


def parse_pbtxt(text: str) -> dict[str, Any]:
    """A small reader of protobuf text format: every field becomes a list of its values."""
    tokens = re.findall(r'"[^"]*"|[{}\[\]:,]|[^\s{}\[\]:,]+', text)
    position = 0

    def value() -> Any:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[position] != "]":
                items.append(value())
                if tokens[position] == ",":
                    position += 1
            position += 1
            return items
        if token.startswith('"'):
            return token[1:-1]
        return int(token) if re.fullmatch(r"-?\d+", token) else token

    def message(end: str | None) -> dict[str, Any]:
        nonlocal position
        fields: dict[str, Any] = {}
        while position < len(tokens) and tokens[position] != end:
            name = tokens[position]
            position += 1
            if tokens[position] == ":":
                position += 1
            parsed = value()
            repeated_messages = isinstance(parsed, list) and parsed and all(isinstance(p, dict) for p in parsed)
            # "input [ {...}, {...} ]" is a repeated message field; "dims: [ -1, 3 ]" is one list value.
            fields.setdefault(name, []).extend(parsed if repeated_messages else [parsed])
        position += 1
        return fields

    return message(None)


def graph_tensors(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        return {"name": value.name, "data_type": TRITON_TYPES[value.type.tensor_type.elem_type], "dims": dims}

    return [describe(v) for v in graph.input], [describe(v) for v in graph.output]


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_config_matches_the_real_inputs_and_outputs(classifier_folder: ServedFolder, tmp_path: Path, int8: bool) -> None:
    result = export_triton_repository(classifier_folder.path, tmp_path / "model_repository", int8=int8,
                                      max_batch_size=16, instance_count=2)
    source = classifier_folder.path / (ONNX_INT8 if int8 else ONNX_FP32)
    model_dir = tmp_path / "model_repository" / "tiny-sentiment"
    assert result.model_dir == model_dir
    assert (model_dir / "1" / "model.onnx").read_bytes() == source.read_bytes()

    config = parse_pbtxt((model_dir / "config.pbtxt").read_text())
    assert config["name"] == ["tiny-sentiment"] and config["platform"] == ["onnxruntime_onnx"]
    assert config["max_batch_size"] == [16]
    inputs, outputs = graph_tensors(source)
    for section, expected in (("input", inputs), ("output", outputs)):
        written = [{"name": e["name"][0], "data_type": e["data_type"][0], "dims": e["dims"][0]} for e in config[section]]
        # With batching on, Triton's dims leave out the batch axis, which must be dynamic in the graph.
        assert all(tensor["dims"][0] == -1 for tensor in expected)
        assert written == [{**tensor, "dims": tensor["dims"][1:]} for tensor in expected]
    assert config["output"][0]["label_filename"] == ["labels.txt"]
    assert (model_dir / "labels.txt").read_text().split() == [LABELS[i] for i in range(len(LABELS))]
    assert config["dynamic_batching"][0]["max_queue_delay_microseconds"] == [2000]
    assert config["instance_group"] == [{"count": [2], "kind": ["KIND_CPU"]}]


def test_no_batching_keeps_full_dims_and_a_rerun_replaces_the_model(embedder_folder: ServedFolder, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    export_triton_repository(embedder_folder.path, repository, model_name="first")
    export_triton_repository(embedder_folder.path, repository, model_name="first", max_batch_size=0)
    config = parse_pbtxt((repository / "first" / "config.pbtxt").read_text())
    inputs, outputs = graph_tensors(embedder_folder.path / ONNX_FP32)
    assert [e["dims"][0] for e in config["output"]] == [t["dims"] for t in outputs]
    assert config["output"][0]["dims"][0] == [-1, -1, 32]
    assert "dynamic_batching" not in config and "label_filename" not in config["output"][0]
    assert sorted(p.name for p in repository.iterdir()) == ["first"]  # no staging leftovers


def test_cli_export_triton(classifier_folder: ServedFolder, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["export-triton", str(classifier_folder.path),
                                          "--repository", str(tmp_path / "repo"), "--max-batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert parse_pbtxt((tmp_path / "repo" / "tiny-sentiment" / "config.pbtxt").read_text())["max_batch_size"] == [8]

    missing = CliRunner().invoke(cli_app, ["export-triton", str(tmp_path), "--repository", str(tmp_path / "repo")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_cli_serve_passes_its_options_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import hubcompress.serving

    seen: dict[str, Any] = {}
    monkeypatch.setattr(hubcompress.serving, "serve", lambda source, settings, **kw: seen.update(source=source,
                                                                                             settings=settings, **kw))
    result = CliRunner().invoke(cli_app, ["serve", "out/demo", "--int8", "--port", "9001", "--max-batch-size", "4",
                                          "--max-delay-ms", "7", "--overflow", "reject"])
    assert result.exit_code == 0, result.output
    assert seen["source"] == "out/demo" and seen["host"] == "127.0.0.1" and seen["port"] == 9001
    settings = seen["settings"]
    assert (settings.int8, settings.max_batch_size, settings.max_delay_ms, settings.overflow) == (True, 4, 7.0, "reject")

    bad = CliRunner().invoke(cli_app, ["serve", "out/demo", "--overflow", "drop"])
    assert bad.exit_code == 2 and "overflow" in bad.output
