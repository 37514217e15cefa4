"""``/predict`` and ``/v2/.../infer`` of token-classification and question-answering folders: the
answers transformers' own pipelines give for the same PyTorch model (entities with
``aggregation_strategy="simple"``; answer spans), and the per-token outputs of the v2 protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from hubcompress.serving import create_app, load_served_model

from ..pipeline.token_tasks import TINY, make_token_task_inputs

NER_TEXTS = ["alice went to new york with bob", "erin saw paris today", "the a very happy"]
QUESTIONS = [{"question": "who is it ?", "context": "the a went to dave and saw paris later"},
             {"question": "where did it go ?", "context": "today carol went home to rome with a very happy"}]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-ner/ and tiny-qa/ as output folders: weights, tokenizer, fp32 and int8 ONNX."""
    from exporters.onnx import (
        ONNX_FP32,
        ONNX_INT8,
        export_config_for_model,
        export_onnx,
        quantize_dynamic_int8,
        write_int8_aliases,
    )
    from transformers import AutoModelForQuestionAnswering, AutoModelForTokenClassification

    root = make_token_task_inputs(tmp_path_factory.mktemp("served-token-tasks"))
    for name, cls, task in (("tiny-ner", AutoModelForTokenClassification, "token-classification"),
                            ("tiny-qa", AutoModelForQuestionAnswering, "question-answering")):
        model = cls.from_pretrained(root / name).eval()
        export_onnx(model, None, root / name / ONNX_FP32, config=export_config_for_model(model, task))
        quantize_dynamic_int8(root / name / ONNX_FP32, root / name / ONNX_INT8)
        write_int8_aliases(root / name)
    return root


def test_entities_are_those_of_the_transformers_pipeline(folders: Path) -> None:
    from transformers import pipeline

    reference = pipeline("token-classification", model=str(folders / "tiny-ner"), aggregation_strategy="simple",
                         device="cpu")
    with TestClient(create_app(load_served_model(folders / "tiny-ner"))) as client:
        body = client.post("/predict", json={"inputs": NER_TEXTS}).json()
    assert body["task"] == "token-classification"
    for text, got in zip(NER_TEXTS, body["predictions"]):
        expected = reference(text)
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in got["entities"]] == \
            [(e["entity_group"], e["word"], e["start"], e["end"]) for e in expected], text
        np.testing.assert_allclose([e["score"] for e in got["entities"]], [e["score"] for e in expected], atol=1e-4)
        assert all(0 <= e["start"] < e["end"] <= len(text) for e in got["entities"])
    assert {e["entity_group"] for p in body["predictions"] for e in p["entities"]} == {"PER", "LOC"}


def test_token_classification_v2_infer_returns_per_token_probabilities(folders: Path) -> None:
    model = load_served_model(folders / "tiny-ner")
    with TestClient(create_app(model)) as client:
        metadata = client.get(f"/v2/models/{model.name}").json()
        answer = client.post(f"/v2/models/{model.name}/infer", json={"inputs": [
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": NER_TEXTS[:2]}]}).json()
    spec = next(o for o in metadata["outputs"] if o["name"] == "probabilities")
    assert spec["shape"] == [-1, -1, 5]
    outputs = {o["name"]: o for o in answer["outputs"]}
    shape = outputs["probabilities"]["shape"]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(shape)
    logits = np.array(outputs["logits"]["data"]).reshape(outputs["logits"]["shape"])
    assert shape[0] == 2 and shape[2] == 5 and shape[1] == logits.shape[1]
    np.testing.assert_allclose(probabilities[0].sum(-1), 1.0, atol=1e-5)


def reference_answer(folder: Path, question: str, context: str) -> dict:
    """What transformers 4's question-answering pipeline answered (v5 removed it), by brute force on the
    PyTorch model: softmax over the context tokens and [CLS], the best start x end with
    start <= end < start + 30."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping")[0].tolist()
    context_tokens = [k for k, s in enumerate(enc.sequence_ids(0)) if s == 1]
    with torch.no_grad():
        out = AutoModelForQuestionAnswering.from_pretrained(folder).eval()(**enc)
    keep = torch.full_like(out.start_logits[0], -1e4)
    keep[[0, *context_tokens]] = 0
    starts, ends = (torch.softmax(x[0] + keep, -1) for x in (out.start_logits, out.end_logits))
    score, s, e = max((float(starts[s] * ends[e]), s, e) for s in context_tokens for e in context_tokens
                      if s <= e < s + 30)
    start, end = offsets[s][0], offsets[e][1]
    return {"answer": context[start:end], "score": score, "start": start, "end": end}


def test_answers_are_those_of_the_transformers_pipeline(folders: Path) -> None:
    with TestClient(create_app(load_served_model(folders / "tiny-qa"))) as client:
        body = client.post("/predict", json={"inputs": QUESTIONS}).json()
        one = client.post("/predict", json={"inputs": QUESTIONS[0]}).json()
        refused = client.post("/predict", json={"inputs": ["just a text"]})
    assert body["task"] == "question-answering" and one["predictions"] == body["predictions"][:1]
    for item, got in zip(QUESTIONS, body["predictions"]):
        expected = reference_answer(folders / "tiny-qa", item["question"], item["context"])
        assert (got["answer"], got["start"], got["end"]) == (expected["answer"], expected["start"], expected["end"])
        assert got["score"] == pytest.approx(expected["score"], abs=1e-4)
    assert body["predictions"][0]["answer"] == "dave"  # the tiny model really reads
    assert refused.status_code == 400 and "question" in refused.json()["error"]


def test_a_long_context_is_read_in_windows(folders: Path) -> None:
    """A context over the model's 64 tokens: every window is run, and the answer is found in the last."""
    from transformers import AutoModelForQuestionAnswering

    context = " ".join(["the a went to with and saw met in today later home was very"] * 6) + " dave went home"
    model = load_served_model(folders / "tiny-qa")
    with TestClient(create_app(model)) as client:
        body = client.post("/predict", json={"inputs": [{"question": "who is it ?", "context": context}]}).json()
    (got,) = body["predictions"]
    assert got["answer"] == "dave" and context[got["start"]:got["end"]] == "dave"
    assert model.max_tokens == TINY["max_position_embeddings"]
    torch_model = AutoModelForQuestionAnswering.from_pretrained(folders / "tiny-qa").eval()  # the ONNX file's source
    assert torch_model.config.max_position_embeddings == 64


def test_question_answering_v2_infer_serves_start_and_end_logits(folders: Path) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = load_served_model(folders / "tiny-qa")
    tokenizer = AutoTokenizer.from_pretrained(folders / "tiny-qa")
    enc = tokenizer(QUESTIONS[0]["question"], QUESTIONS[0]["context"], return_tensors="np")
    inputs = [{"name": k, "shape": list(v.shape), "datatype": "INT64", "data": v.ravel().tolist()} for k, v in enc.items()]
    with TestClient(create_app(model)) as client:
        answer = client.post(f"/v2/models/{model.name}/infer", json={"inputs": inputs}).json()
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
    assert set(outputs) == {"start_logits", "end_logits", "span_logits"}
    torch_model = AutoModelForQuestionAnswering.from_pretrained(folders / "tiny-qa").eval()
    with torch.no_grad():
        expected = torch_model(**{k: torch.from_numpy(v) for k, v in enc.items()})
    np.testing.assert_allclose(outputs["start_logits"], expected.start_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs["span_logits"][..., 1], expected.end_logits.numpy(), atol=1e-4)
