"""Serving the language-model tasks with FastAPI's TestClient: ``/predict`` answers what transformers'
fill-mask and text-generation pipelines answer, and ``/v2`` infer returns the graph's logits and the
task's own output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from hubcompress.serving import ServerSettings, create_app, load_served_model

from ..pipeline.lm_models import save_causal, save_mlm


def _export(folder: Path, task: str) -> Path:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from exporters.onnx import ONNX_FP32, ONNX_INT8, export_config_for_model, export_onnx, quantize_dynamic_int8

    auto = AutoModelForMaskedLM if task == "fill-mask" else AutoModelForCausalLM
    model = auto.from_pretrained(folder).eval()
    export_onnx(model, None, folder / ONNX_FP32, config=export_config_for_model(model, task))
    quantize_dynamic_int8(folder / ONNX_FP32, folder / ONNX_INT8)
    return folder


@pytest.fixture(scope="module")
def mlm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(save_mlm(tmp_path_factory.mktemp("served-lm") / "tiny-mlm"), "fill-mask")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(save_causal(tmp_path_factory.mktemp("served-lm") / "tiny-gpt2"), "text-generation")


def _client(folder: Path) -> Iterator[TestClient]:
    with TestClient(create_app(load_served_model(folder, ServerSettings(int8=False)))) as client:
        yield client


@pytest.fixture(scope="module")
def mlm_client(mlm_folder: Path) -> Iterator[TestClient]:
    yield from _client(mlm_folder)


@pytest.fixture(scope="module")
def gpt2_client(gpt2_folder: Path) -> Iterator[TestClient]:
    yield from _client(gpt2_folder)


def test_fill_mask_answers_like_the_transformers_pipeline(mlm_client: TestClient, mlm_folder: Path) -> None:
    from transformers import pipeline

    texts = ["north east [MASK] west red", "one two [MASK] cat [MASK]"]
    answer = mlm_client.post("/predict", json={"inputs": texts}).json()
    assert answer["task"] == "fill-mask" and answer["truncated"] == [False, False]
    single, double = answer["predictions"]
    assert len(single) == 5 and set(single[0]) == {"score", "token", "token_str", "sequence"}
    assert len(double) == 2 and all(len(fillers) == 5 for fillers in double)  # one list per mask
    expected = pipeline("fill-mask", model=str(mlm_folder), device="cpu")(texts[0])
    assert [f["token_str"] for f in single] == [e["token_str"] for e in expected]
    assert [f["sequence"] for f in single] == [e["sequence"] for e in expected]
    np.testing.assert_allclose([f["score"] for f in single], [e["score"] for e in expected], atol=1e-4)


def test_fill_mask_refuses_a_text_without_the_mask_token(mlm_client: TestClient) -> None:
    refusal = mlm_client.post("/predict", json={"inputs": ["north [MASK]", "no mask here"]})
    assert refusal.status_code == 400
    assert refusal.json()["error"] == "inputs[1] has no mask token: write [MASK] where the word to fill in goes"


def test_fill_mask_v2_infer_returns_logits_and_per_token_probabilities(mlm_client: TestClient) -> None:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["north [MASK] south"]}]}
    outputs = {o["name"]: o for o in mlm_client.post("/v2/models/tiny-mlm/infer", json=body).json()["outputs"]}
    assert outputs["logits"]["shape"] == outputs["probabilities"]["shape"] == [1, 5, 17]
    probabilities = np.reshape(outputs["probabilities"]["data"], outputs["probabilities"]["shape"])
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    metadata = mlm_client.get("/v2/models/tiny-mlm").json()
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, -1, 17]} in metadata["outputs"]


def test_generation_is_greedy_like_transformers_generate(gpt2_client: TestClient, gpt2_folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ["north east", "cat dog north east south"]
    answer = gpt2_client.post("/predict", json={"inputs": texts, "parameters": {"max_new_tokens": 4}}).json()
    assert answer["task"] == "text-generation"
    tokenizer = AutoTokenizer.from_pretrained(gpt2_folder)
    model = AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    for text, prediction in zip(texts, answer["predictions"]):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            generated = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        assert prediction["generated_text"] == tokenizer.decode(generated[0], skip_special_tokens=True)
        assert prediction["new_tokens"] == 4
    # The teacher learnt the cycle: the continuation walks on.
    assert answer["predictions"][0]["generated_text"] == "north east south west red green"
    default = gpt2_client.post("/predict", json={"inputs": ["one"]}).json()["predictions"][0]
    assert default["new_tokens"] == 20


def test_generation_refuses_a_bad_max_new_tokens(gpt2_client: TestClient) -> None:
    refusal = gpt2_client.post("/predict", json={"inputs": ["one"], "parameters": {"max_new_tokens": "many"}})
    assert refusal.status_code == 400 and "parameters.max_new_tokens" in refusal.json()["error"]


def test_generation_v2_infer_returns_logits_and_the_next_token_logits(gpt2_client: TestClient) -> None:
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["north east", "one"]}]}
    outputs = {o["name"]: o for o in gpt2_client.post("/v2/models/tiny-gpt2/infer", json=body).json()["outputs"]}
    assert outputs["logits"]["shape"] == [2, 2, 14] and outputs["next_token_logits"]["shape"] == [2, 14]
    logits = np.reshape(outputs["logits"]["data"], outputs["logits"]["shape"])
    nxt = np.reshape(outputs["next_token_logits"]["data"], [2, 14])
    np.testing.assert_allclose(nxt, [logits[0, 1], logits[1, 0]], atol=1e-6)
