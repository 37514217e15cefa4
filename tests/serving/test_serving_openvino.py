"""`serve --backend openvino`: the same /predict answers, Open Inference Protocol and dynamic batching
as ONNX Runtime, on the OpenVINO files of the same folder; and which file a plain `serve` picks."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .served_folders import LIVE_TEXTS, LiveServer, ServedFolder, encode_alone

pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'hubcompress[openvino]'")
pytest.importorskip("nncf", reason="the openvino extra is not installed: pip install 'hubcompress[openvino]'")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the serve extra: pip install fastapi uvicorn")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from exporters.onnx import ONNX_FP32  # noqa: E402
from exporters.openvino import OPENVINO_FP32, OPENVINO_INT8, convert_onnx_to_openvino, quantize_openvino_int8  # noqa: E402
from hubcompress.cli import app as cli_app  # noqa: E402
from hubcompress.errors import ServingError  # noqa: E402
from hubcompress.serving import BackgroundServer, ServerSettings, create_app, load_served_model  # noqa: E402
from hubcompress.serving.artifacts import choose_artifact  # noqa: E402

from .test_serving_bad_input import BAD_REQUESTS, LIMITS  # noqa: E402

OPENVINO = ServerSettings(backend="openvino", int8=False)
ORT = ServerSettings(backend="onnxruntime", int8=False)


def with_openvino(source: ServedFolder, target: Path) -> ServedFolder:
    """A copy of a served folder with its fp32 ONNX file converted to IR, and an int8 IR from NNCF."""
    shutil.copytree(source.path, target)
    fp32 = convert_onnx_to_openvino(target / ONNX_FP32, target / OPENVINO_FP32)
    samples = [dict(encode_alone(source, text)) for text in LIVE_TEXTS * 2]
    quantize_openvino_int8(fp32.xml_path, target / OPENVINO_INT8, samples, show_progress=False)
    return ServedFolder(target, source.model)


@pytest.fixture(scope="module")
def ov_classifier(classifier_folder: ServedFolder, tmp_path_factory: pytest.TempPathFactory) -> ServedFolder:
    return with_openvino(classifier_folder, tmp_path_factory.mktemp("ov") / "tiny-sentiment")


@pytest.fixture(scope="module")
def ov_embedder(embedder_folder: ServedFolder, tmp_path_factory: pytest.TempPathFactory) -> ServedFolder:
    return with_openvino(embedder_folder, tmp_path_factory.mktemp("ov") / "tiny-embedder")


@pytest.fixture(scope="module")
def live_ov_classifier(ov_classifier: ServedFolder) -> Iterator[LiveServer]:
    model = load_served_model(ov_classifier.path, ServerSettings(backend="openvino", int8=False, max_batch_size=16,
                                                                  max_delay_ms=30))
    app = create_app(model)
    with BackgroundServer(app) as server:
        yield LiveServer(server.url, app)


def _predict(folder: ServedFolder, settings: ServerSettings, texts: list[str]) -> dict[str, Any]:
    with TestClient(create_app(load_served_model(folder.path, settings))) as client:
        response = client.post("/predict", json={"inputs": texts})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_openvino_backend_runs_the_ir(ov_classifier: ServedFolder) -> None:
    model = load_served_model(ov_classifier.path, OPENVINO)
    assert model.backend.runtime == "openvino" and model.platform == "openvino"
    assert model.folder.model_path == ov_classifier.path / OPENVINO_FP32
    assert model.folder.artifact is not None and model.folder.artifact.name == "openvino_fp32"


@pytest.mark.parametrize("task", ["classifier", "embedder"])
def test_predict_answers_what_onnx_runtime_answers(task: str, ov_classifier: ServedFolder,
                                                   ov_embedder: ServedFolder) -> None:
    folder = ov_classifier if task == "classifier" else ov_embedder
    openvino, ort = _predict(folder, OPENVINO, LIVE_TEXTS), _predict(folder, ORT, LIVE_TEXTS)
    assert openvino.keys() == ort.keys()
    if task == "classifier":
        for ov_row, ort_row in zip(openvino["predictions"], ort["predictions"]):
            assert ov_row["label"] == ort_row["label"] and ov_row["truncated"] == ort_row["truncated"]
            np.testing.assert_allclose(list(ov_row["scores"].values()), list(ort_row["scores"].values()), atol=1e-5)
    else:
        embeddings = np.array(openvino["embeddings"])
        np.testing.assert_allclose(embeddings, np.array(ort["embeddings"]), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)  # pooled and normalised


def test_int8_ir_serves_and_stays_close(ov_classifier: ServedFolder) -> None:
    int8 = _predict(ov_classifier, ServerSettings(backend="openvino", int8=True), LIVE_TEXTS)
    fp32 = _predict(ov_classifier, OPENVINO, LIVE_TEXTS)
    for row8, row32 in zip(int8["predictions"], fp32["predictions"]):
        np.testing.assert_allclose(list(row8["scores"].values()), list(row32["scores"].values()), atol=0.1)


def test_open_inference_protocol_metadata_and_infer_match_onnx_runtime(ov_classifier: ServedFolder) -> None:
    name = "tiny-sentiment"
    texts = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": LIVE_TEXTS[:2]}]}
    tokens = encode_alone(ov_classifier, LIVE_TEXTS[1])
    tensors = {"inputs": [{"name": key, "shape": list(value.shape), "datatype": "INT64", "data": value.ravel().tolist()}
                          for key, value in tokens.items()]}
    answers = {}
    for settings in (OPENVINO, ORT):
        with TestClient(create_app(load_served_model(ov_classifier.path, settings))) as client:
            metadata = client.get(f"/v2/models/{name}").json()
            by_text = client.post(f"/v2/models/{name}/infer", json=texts).json()
            by_tokens = client.post(f"/v2/models/{name}/infer", json=tensors).json()
            assert client.get(f"/v2/models/{name}/ready").json()["ready"] is True
        answers[settings.backend] = metadata, by_text, by_tokens
    (ov_meta, ov_text, ov_tokens), (ort_meta, ort_text, ort_tokens) = answers["openvino"], answers["onnxruntime"]
    assert ov_meta["platform"] == "openvino" and ort_meta["platform"] == "onnxruntime_onnx"
    assert {k: v for k, v in ov_meta.items() if k != "platform"} == {k: v for k, v in ort_meta.items() if k != "platform"}
    for ov_answer, ort_answer in ((ov_text, ort_text), (ov_tokens, ort_tokens)):
        assert [o["name"] for o in ov_answer["outputs"]] == [o["name"] for o in ort_answer["outputs"]]
        for ov_out, ort_out in zip(ov_answer["outputs"], ort_answer["outputs"]):
            assert ov_out["shape"] == ort_out["shape"] and ov_out["datatype"] == ort_out["datatype"]
            np.testing.assert_allclose(ov_out["data"], ort_out["data"], atol=1e-5)


def test_concurrent_requests_are_batched_and_each_gets_its_own_row(live_ov_classifier: LiveServer,
                                                                   ov_classifier: ServedFolder) -> None:
    texts = [" ".join(LIVE_TEXTS[: 1 + i % 4]) + f" {i}" for i in range(16)]
    stats = live_ov_classifier.app.state.batcher.stats  # type: ignore[attr-defined]
    before = stats.batches

    async def post_all() -> list[dict]:
        async with httpx.AsyncClient(base_url=live_ov_classifier.url, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/predict", json={"inputs": [t]}) for t in texts))
        assert all(r.status_code == 200 for r in responses)
        return [r.json() for r in responses]

    alone = load_served_model(ov_classifier.path, OPENVINO)
    for text, body in zip(texts, asyncio.run(post_all())):
        feeds = alone.encode_texts([text]).feeds
        expected = alone.add_task_output(feeds, alone.run(feeds))["probabilities"][0]
        np.testing.assert_allclose(list(body["predictions"][0]["scores"].values()), expected, atol=1e-5)
    assert stats.batches - before < len(texts) and stats.largest_batch > 1


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_the_same_4xx(case: str, ov_classifier: ServedFolder) -> None:
    method, path, body, headers, status, word = BAD_REQUESTS[case]
    settings = ServerSettings(**{**LIMITS.__dict__, "backend": "openvino", "int8": False})
    with TestClient(create_app(load_served_model(ov_classifier.path, settings))) as client:
        response = client.request(method, path, content=body, headers=headers)
        assert response.status_code == status, response.text
        assert word.lower() in response.json()["error"].lower()
        assert client.post("/predict", json={"inputs": ["fine"]}).status_code == 200


def _report(folder: Path, latency: dict[str, float], passed: dict[str, bool]) -> None:
    (folder / "report.json").write_text(json.dumps({
        "latency_ms": {"batch8": latency},
        "gate": {"verdicts": {name: {"passed": ok, "checks": {}} for name, ok in passed.items()}}}))


def test_plain_serve_picks_the_fastest_validated_file_and_says_why(ov_classifier: ServedFolder, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    folder = Path(shutil.copytree(ov_classifier.path, tmp_path / "tiny-sentiment"))
    assert choose_artifact(folder).artifact.name == "onnx_fp32"  # no report.json: what `serve` always served
    latency = {"onnx_fp32": 9.0, "onnx_int8": 5.0, "openvino_fp32": 6.0, "openvino_int8": 2.0}
    _report(folder, latency, {name: True for name in latency})
    with caplog.at_level(logging.INFO, logger="hubcompress.serving"):
        model = load_served_model(folder)
    assert model.folder.artifact.name == "openvino_int8" and model.backend.runtime == "openvino"
    assert any("openvino_int8" in r.getMessage() and "fastest validated" in r.getMessage() for r in caplog.records)

    _report(folder, latency, {**{name: True for name in latency}, "openvino_int8": False})  # its verdict failed
    assert choose_artifact(folder).artifact.name == "onnx_int8"
    assert choose_artifact(folder, runtime="openvino").artifact.name == "openvino_fp32"
    assert choose_artifact(folder, int8=False).artifact.name == "openvino_fp32"
    assert choose_artifact(folder, runtime="onnxruntime", int8=False).artifact.name == "onnx_fp32"
    # A runtime that is not installed is skipped unless asked for by name.
    assert choose_artifact(folder, installed=lambda runtime: runtime != "openvino").artifact.name == "onnx_int8"
    with pytest.raises(ServingError, match="openvino"):
        choose_artifact(folder, runtime="openvino", installed=lambda runtime: runtime != "openvino")


def test_missing_openvino_files_and_unknown_backends_are_bad_input(classifier_folder: ServedFolder) -> None:
    with pytest.raises(ServingError, match="openvino_model.xml does not exist"):
        load_served_model(classifier_folder.path, OPENVINO)  # this folder has ONNX files only
    with pytest.raises(ServingError, match="backend must be one of"):
        ServerSettings(backend="tensorrt")


def test_cli_serve_passes_the_backend_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import hubcompress.serving

    seen: dict[str, Any] = {}
    monkeypatch.setattr(hubcompress.serving, "serve", lambda source, settings, **kw: seen.update(settings=settings))
    result = CliRunner().invoke(cli_app, ["serve", "out/demo", "--backend", "openvino", "--fp32"])
    assert result.exit_code == 0, result.output
    assert (seen["settings"].backend, seen["settings"].int8) == ("openvino", False)
    CliRunner().invoke(cli_app, ["serve", "out/demo"])
    assert (seen["settings"].backend, seen["settings"].int8) == (None, None)  # the report decides
    bad = CliRunner().invoke(cli_app, ["serve", "out/demo", "--backend", "tensorrt"])
    assert bad.exit_code == 2 and "backend" in bad.output
