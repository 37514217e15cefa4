"""``POST /predict`` over a real socket with httpx: labels and scores, or sentence embeddings, per task."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from .served_folders import LIVE_TEXTS, LABELS, LiveServer, ServedFolder, encode_alone

httpx = pytest.importorskip("httpx")

from hubcompress.errors import HubError, ServingError  # noqa: E402
from hubcompress.serving import BackgroundServer, ServerSettings, create_app, load_served_model  # noqa: E402


@pytest.fixture(scope="module")
def live_embedder(embedder_folder: ServedFolder) -> Iterator[LiveServer]:
    app = create_app(load_served_model(embedder_folder.path))
    with BackgroundServer(app) as server:
        yield LiveServer(server.url, app)


def test_classification_returns_labels_and_scores_of_the_torch_model(
    live_classifier: LiveServer, classifier_folder: ServedFolder
) -> None:
    response = httpx.post(f"{live_classifier.url}/predict", json={"inputs": LIVE_TEXTS}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["task"] == "text-classification" and body["model"] == "tiny-sentiment"
    for text, prediction in zip(LIVE_TEXTS, body["predictions"]):
        with torch.no_grad():
            feeds = {k: torch.from_numpy(v) for k, v in encode_alone(classifier_folder, text).items()}
            expected = torch.softmax(classifier_folder.model(**feeds).logits, dim=-1)[0].numpy()
        scores = [prediction["scores"][LABELS[i]] for i in range(len(LABELS))]
        np.testing.assert_allclose(scores, expected, atol=1e-4)
        assert prediction["label"] == LABELS[int(expected.argmax())]
        assert prediction["score"] == pytest.approx(float(expected.max()), abs=1e-4)


def test_embeddings_are_mean_pooled_and_normalised_like_sentence_transformers(
    live_embedder: LiveServer, embedder_folder: ServedFolder
) -> None:
    response = httpx.post(f"{live_embedder.url}/predict", json={"inputs": LIVE_TEXTS}, timeout=30)
    assert response.status_code == 200, response.text
    embeddings = np.array(response.json()["embeddings"])
    assert embeddings.shape == (len(LIVE_TEXTS), 32)
    for text, embedding in zip(LIVE_TEXTS, embeddings):
        feeds = {k: torch.from_numpy(v) for k, v in encode_alone(embedder_folder, text).items()}
        with torch.no_grad():
            hidden = embedder_folder.model(**feeds).last_hidden_state
        mask = feeds["attention_mask"].unsqueeze(-1).float()
        expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        np.testing.assert_allclose(embedding, expected[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_embeddings_follow_the_folders_sentence_transformers_modules(embedder_folder: ServedFolder,
                                                                      tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    sentence_transformers = pytest.importorskip("sentence_transformers")
    folder = tmp_path / "cls-max"
    shutil.copytree(embedder_folder.path, folder)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 32,
                                                                   "pooling_mode": ["cls", "max"]}))
    model = load_served_model(folder)
    with TestClient(create_app(model)) as client:
        embeddings = np.array(client.post("/predict", json={"inputs": LIVE_TEXTS}).json()["embeddings"])
        outputs = client.get("/v2/models/cls-max").json()["outputs"]
    expected = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(LIVE_TEXTS)
    assert embeddings.shape == expected.shape == (len(LIVE_TEXTS), 64)  # two modes, concatenated
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)
    assert {e["name"]: e["shape"] for e in outputs}["sentence_embedding"] == [-1, 64]


def test_embedder_metadata_lists_the_sentence_embedding_output(live_embedder: LiveServer) -> None:
    metadata = httpx.get(f"{live_embedder.url}/v2/models/tiny-embedder").json()
    shapes = {entry["name"]: entry["shape"] for entry in metadata["outputs"]}
    assert shapes == {"last_hidden_state": [-1, -1, 32], "pooler_output": [-1, 32], "sentence_embedding": [-1, 32]}
    assert metadata["parameters"]["task"] == "feature-extraction"
    # The batcher cuts padded token vectors back per caller along this axis.
    assert live_embedder.app.state.model.sequence_outputs == {"last_hidden_state": 1}  # type: ignore[attr-defined]


def test_int8_serves_the_quantized_file_and_stays_close(classifier_folder: ServedFolder) -> None:
    from fastapi.testclient import TestClient

    fp32 = load_served_model(classifier_folder.path)
    int8 = load_served_model(classifier_folder.path, ServerSettings(int8=True, model_name="tiny-int8"))
    assert int8.folder.onnx_path.name == "model_quantized.onnx" and int8.name == "tiny-int8"
    with TestClient(create_app(fp32)) as a, TestClient(create_app(int8)) as b:
        scores_fp32 = a.post("/predict", json={"inputs": LIVE_TEXTS}).json()["predictions"]
        scores_int8 = b.post("/predict", json={"inputs": LIVE_TEXTS}).json()["predictions"]
    for row32, row8 in zip(scores_fp32, scores_int8):
        np.testing.assert_allclose(list(row8["scores"].values()), list(row32["scores"].values()), atol=0.05)


def test_the_task_comes_from_hubcompress_json_first(classifier_folder: ServedFolder, tmp_path: Path) -> None:
    folder = tmp_path / "as-embedder"
    shutil.copytree(classifier_folder.path, folder)
    (folder / "hubcompress.json").write_text(json.dumps({"task": "feature-extraction"}))
    with pytest.raises(ServingError, match="last_hidden_state"):
        load_served_model(folder)  # a classifier graph has no token vectors to pool


def test_unservable_sources_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ServingError, match="onnx/model.onnx"):
        load_served_model(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError):
        load_served_model("someone/not-cached-anywhere")
