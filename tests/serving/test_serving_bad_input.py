"""Every kind of bad request gets a 4xx with a JSON error, never a 500, and the server keeps serving."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator

import pytest

from .served_folders import ServedFolder

pytest.importorskip("fastapi", reason="the serve extra: pip install fastapi uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from hubcompress.serving import ServerSettings, create_app, load_served_model  # noqa: E402

MODEL = "tiny-sentiment"
INFER = f"/v2/models/{MODEL}/infer"
LIMITS = ServerSettings(max_items=4, max_text_chars=200, max_body_bytes=4096, max_tokens=16, overflow="reject")


def ids_input(data: object, shape: list[int], datatype: str = "INT64", name: str = "input_ids") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def infer_body(*inputs: dict, **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def binary_infer(entry: dict, blob: bytes) -> tuple[bytes, dict[str, str]]:
    """A body in the binary tensor extension: the JSON header, then ``blob``."""
    header = json.dumps({"inputs": [entry]}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header))}


PAST_THE_END = binary_infer({"name": "input_ids", "shape": [1, 2], "datatype": "INT64",
                             "parameters": {"binary_data_size": 16}}, struct.pack("<q", 2))
NOT_UTF8 = binary_infer({"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}},
                        struct.pack("<I", 2) + b"\xff\xfe")


# (method, path, body bytes, extra headers, expected status, a word the message must hold)
BAD_REQUESTS: dict[str, tuple[str, str, bytes, dict[str, str], int, str]] = {
    "empty body": ("POST", "/predict", b"", {}, 400, "empty"),
    "malformed json": ("POST", "/predict", b'{"inputs": ["a",', {}, 400, "malformed"),
    "not utf-8": ("POST", "/predict", b'{"inputs": ["\xff\xfe"]}', {}, 400, "UTF-8"),
    "json list body": ("POST", "/predict", b'["a", "b"]', {}, 400, "inputs"),
    "missing inputs": ("POST", "/predict", b'{"texts": ["a"]}', {}, 400, "inputs"),
    "inputs not a list": ("POST", "/predict", b'{"inputs": 42}', {}, 400, "list"),
    "number item": ("POST", "/predict", b'{"inputs": ["fine", 3]}', {}, 400, "inputs[1]"),
    "null item": ("POST", "/predict", b'{"inputs": [null]}', {}, 400, "string"),
    "nested item": ("POST", "/predict", b'{"inputs": [["a"]]}', {}, 400, "string"),
    "no items": ("POST", "/predict", b'{"inputs": []}', {}, 400, "empty"),
    "lone surrogate": ("POST", "/predict", b'{"inputs": ["\\ud800 x"]}', {}, 400, "Unicode"),
    "lone surrogate in bytes": ("POST", INFER, infer_body({"name": "text", "shape": [1], "datatype": "BYTES",
                                                          "data": ["\udfff"]}), {}, 400, "Unicode"),
    "too many items": ("POST", "/predict", json.dumps({"inputs": ["a"] * 5}).encode(), {}, 400, "limit of 4"),
    "too many characters": ("POST", "/predict", json.dumps({"inputs": ["word " * 50]}).encode(), {}, 400, "characters"),
    "too many tokens": ("POST", "/predict", json.dumps({"inputs": ["good " * 30]}).encode(), {}, 400, "tokens"),
    "deeply nested json": ("POST", "/predict", b"[" * 2000 + b"]" * 2000, {}, 400, "nested"),
    "oversized body": ("POST", "/predict", json.dumps({"inputs": ["a" * 5000]}).encode(), {}, 413, "limit"),
    "unknown model": ("POST", "/v2/models/other/infer", infer_body(ids_input([1], [1, 1])), {}, 404, "unknown model"),
    "unknown version": ("POST", f"/v2/models/{MODEL}/versions/7/infer", infer_body(ids_input([1], [1, 1])), {}, 404,
                        "version"),
    "unknown model metadata": ("GET", "/v2/models/other", b"", {}, 404, "unknown model"),
    "unknown input name": ("POST", INFER, infer_body(ids_input([1], [1, 1], name="ids")), {}, 400, "unknown input"),
    "wrong dtype": ("POST", INFER, infer_body(ids_input([1.5], [1, 1], "FP32")), {}, 400, "datatype"),
    "float data as int64": ("POST", INFER, infer_body(ids_input([1.5, 2.0], [1, 2])), {}, 400, "integers"),
    "bool data as int64": ("POST", INFER, infer_body(ids_input([True], [1, 1])), {}, 400, "integers"),
    "string data as int64": ("POST", INFER, infer_body(ids_input(["7"], [1, 1])), {}, 400, "integers"),
    "huge integer": ("POST", INFER, infer_body(ids_input([2**80], [1, 1])), {}, 400, "integers"),
    "ragged data": ("POST", INFER, infer_body(ids_input([[1, 2], [3]], [2, 2])), {}, 400, "regular array"),
    "3-d shape": ("POST", INFER, infer_body(ids_input([1, 2], [1, 1, 2])), {}, 400, "shape"),
    "shape mismatch": ("POST", INFER, infer_body(ids_input([1, 2, 3], [1, 2])), {}, 400, "elements"),
    "negative shape": ("POST", INFER, infer_body(ids_input([1], [-1, 1])), {}, 400, "shape"),
    "zero rows": ("POST", INFER, infer_body(ids_input([], [0, 3])), {}, 400, "above 0"),
    "id out of vocabulary": ("POST", INFER, infer_body(ids_input([2, 99999, 3], [1, 3])), {}, 400, "input_ids values"),
    "negative id": ("POST", INFER, infer_body(ids_input([2, -1, 3], [1, 3])), {}, 400, "input_ids values"),
    "mask value 2": ("POST", INFER, infer_body(ids_input([2, 3], [1, 2]), ids_input([1, 2], [1, 2], name="attention_mask")),
                     {}, 400, "attention_mask values"),
    "mask shape differs": ("POST", INFER, infer_body(ids_input([2, 3], [1, 2]), ids_input([1], [1, 1], name="attention_mask")),
                           {}, 400, "same shape"),
    "sequence too long": ("POST", INFER, infer_body(ids_input([5] * 20, [1, 20])), {}, 400, "limit of 16"),
    "too many rows": ("POST", INFER, infer_body(ids_input([5] * 5, [5, 1])), {}, 400, "limit of 4"),
    "text and tokens": ("POST", INFER, infer_body(ids_input([2, 3], [1, 2]),
                                                  {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}),
                        {}, 400, "not both"),
    "non-string text": ("POST", INFER, infer_body({"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}),
                        {}, 400, "string"),
    "text shape": ("POST", INFER, infer_body({"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}),
                   {}, 400, "shape"),
    "no inputs": ("POST", INFER, b'{"inputs": []}', {}, 400, "non-empty"),
    "input without data": ("POST", INFER, infer_body({"name": "input_ids", "shape": [1, 1], "datatype": "INT64"}),
                           {}, 400, "neither data"),
    "input given twice": ("POST", INFER, infer_body(ids_input([2], [1, 1]), ids_input([2], [1, 1])), {}, 400, "twice"),
    "unknown output": ("POST", INFER, infer_body(ids_input([2], [1, 1]), outputs=[{"name": "hidden"}]), {}, 400,
                       "unknown output"),
    "binary size past the end": ("POST", INFER, *PAST_THE_END, 400, "runs past"),
    "bad header length": ("POST", INFER, infer_body(ids_input([2], [1, 1])),
                          {"Inference-Header-Content-Length": "lots"}, 400, "integer"),
    "binary bytes not utf-8": ("POST", INFER, *NOT_UTF8, 400, "UTF-8"),
    "compressed body": ("POST", "/predict", b"\x1f\x8b", {"Content-Encoding": "gzip"}, 400, "compressed"),
    "unknown route": ("GET", "/v3/whatever", b"", {}, 404, "Not Found"),
    "wrong method": ("GET", "/predict", b"", {}, 405, "Method Not Allowed"),
}


@pytest.fixture(scope="module")
def client(classifier_folder: ServedFolder) -> Iterator[TestClient]:
    model = load_served_model(classifier_folder.path, LIMITS)
    # raise_server_exceptions=False: a 500 must show up as a status here, not as a test-side exception.
    with TestClient(create_app(model), raise_server_exceptions=False) as test_client:
        yield test_client


def send(client: TestClient, case: tuple[str, str, bytes, dict[str, str], int, str]):
    method, path, body, headers, _, _ = case
    return client.request(method, path, content=body or None, headers=headers)


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_a_4xx_json_error(client: TestClient, case: str) -> None:
    expected_status, expected_word = BAD_REQUESTS[case][4], BAD_REQUESTS[case][5]
    response = send(client, BAD_REQUESTS[case])
    assert response.status_code == expected_status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert expected_word in response.json()["error"]


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ["'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"]}'

    response = client.post("/predict", content=chunks())
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_the_server_keeps_serving_after_hundreds_of_malformed_requests(client: TestClient) -> None:
    cases = [BAD_REQUESTS[name] for name in sorted(BAD_REQUESTS)]
    statuses = [send(client, cases[i % len(cases)]).status_code for i in range(300)]
    assert all(400 <= status < 500 for status in statuses)
    good = client.post("/predict", json={"inputs": ["a good film"]})
    assert good.status_code == 200 and good.json()["predictions"][0]["label"] in {"negative", "neutral", "positive"}
    assert client.get("/v2/health/ready").status_code == 200


def test_truncate_mode_cuts_long_texts_and_says_so(classifier_folder: ServedFolder) -> None:
    model = load_served_model(classifier_folder.path, ServerSettings(max_tokens=8, overflow="truncate"))
    with TestClient(create_app(model)) as client:
        response = client.post("/predict", json={"inputs": ["good " * 30, "good"]})
    assert response.status_code == 200
    assert [row["truncated"] for row in response.json()["predictions"]] == [True, False]


def test_randomly_mutated_requests_never_get_a_5xx(client: TestClient) -> None:
    rng = random.Random(0)
    valid = [
        {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a fine film", "bad"]}]},
        {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [2, 40, 3]},
                    {"name": "attention_mask", "shape": [1, 3], "datatype": "INT64", "data": [1, 1, 1]}],
         "outputs": [{"name": "probabilities"}]},
        {"inputs": ["a fine film", "bad"]},
    ]
    junk = [None, True, -1, 2**70, 0.5, "", "\u2603", "INT64", "BYTES", "text", [], {}, [[1], [2, 3]], {"name": 1}]

    def mutate(value: object) -> object:
        if isinstance(value, dict) and value and rng.random() < 0.8:
            key = rng.choice(sorted(value))
            return {**value, key: mutate(value[key])} if rng.random() < 0.7 else {k: v for k, v in value.items() if k != key}
        if isinstance(value, list) and value and rng.random() < 0.8:
            index = rng.randrange(len(value))
            return value[:index] + [mutate(value[index])] + value[index + 1:]
        return rng.choice(junk)

    for _ in range(300):
        path = rng.choice(["/predict", INFER])
        body = bytearray(json.dumps(mutate(rng.choice(valid))).encode())
        if rng.random() < 0.3:  # and some byte-level damage
            body[rng.randrange(len(body))] = rng.randrange(256)
        response = client.post(path, content=bytes(body))
        assert response.status_code < 500, (path, bytes(body), response.text)
        assert response.headers["content-type"].startswith("application/json")
