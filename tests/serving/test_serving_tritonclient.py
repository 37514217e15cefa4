"""The server against a client no one here wrote: tritonclient.http, with binary and JSON tensors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from .served_folders import LIVE_TEXTS, LiveServer, ServedFolder, encode_alone

httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "tiny-sentiment"
TEXTS = LIVE_TEXTS[:2]


@pytest.fixture
def client(live_classifier: LiveServer):
    with httpclient.InferenceServerClient(url=live_classifier.host_port, network_timeout=30) as triton:
        yield triton


def alone(folder: ServedFolder, text: str) -> np.ndarray:
    return folder.onnx_session().run(["logits"], encode_alone(folder, text))[0][0]


def test_health_readiness_and_model_metadata_match_the_graph(client, classifier_folder: ServedFolder) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    assert not client.is_model_ready("no-such-model")

    metadata = client.get_model_metadata(MODEL)
    graph = onnx.load(str(classifier_folder.path / "onnx" / "model.onnx"), load_external_data=False).graph
    inputs = {entry["name"]: entry for entry in metadata["inputs"]}
    for value in graph.input:
        assert inputs[value.name]["datatype"] == "INT64"
        assert inputs[value.name]["shape"] == [-1, -1]
    assert inputs["text"] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    outputs = {entry["name"]: entry for entry in metadata["outputs"]}
    assert outputs["logits"] == {"name": "logits", "datatype": "FP32", "shape": [-1, 3]}
    assert outputs["probabilities"]["shape"] == [-1, 3]
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]

    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("no-such-model")
    assert unknown.value.status() == "404"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_with_a_bytes_text_input(client, classifier_folder: ServedFolder, binary: bool) -> None:
    text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in ("logits", "probabilities")]
    result = client.infer(MODEL, [text], outputs=outputs, request_id="req-1")

    logits, probabilities = result.as_numpy("logits"), result.as_numpy("probabilities")
    assert logits.shape == (2, 3) and logits.dtype == np.float32
    for row, sentence in enumerate(TEXTS):
        np.testing.assert_allclose(logits[row], alone(classifier_folder, sentence), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert result.get_response()["id"] == "req-1"


def test_infer_with_int64_token_tensors_defaults_to_all_outputs_in_binary(
    client, classifier_folder: ServedFolder
) -> None:
    feeds = encode_alone(classifier_folder, TEXTS[1])
    inputs = []
    for name, array in feeds.items():
        tensor = httpclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(MODEL, inputs)  # no outputs named: tritonclient asks for all, in binary

    expected = classifier_folder.onnx_session().run(["logits"], feeds)[0]
    np.testing.assert_allclose(result.as_numpy("logits"), expected, atol=1e-6)
    assert {entry["name"] for entry in result.get_response()["outputs"]} == {"logits", "probabilities"}


def test_bad_requests_surface_as_inference_server_exceptions(client) -> None:
    ids = httpclient.InferInput("input_ids", [1, 3], "INT64")
    ids.set_data_from_numpy(np.array([[2, 10**6, 3]], dtype=np.int64))
    with pytest.raises(InferenceServerException) as out_of_vocab:
        client.infer(MODEL, [ids])
    assert out_of_vocab.value.status() == "400" and "input_ids values" in out_of_vocab.value.message()

    wrong = httpclient.InferInput("pixel_values", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as unknown:
        client.infer(MODEL, [wrong])
    assert unknown.value.status() == "400" and "unknown input name" in unknown.value.message()
