"""Dynamic batching: concurrent callers share model calls and each gets exactly its own result."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from .served_folders import LiveServer, ServedFolder, encode_alone

httpx = pytest.importorskip("httpx")

from hubcompress.serving import DynamicBatcher  # noqa: E402
from hubcompress.serving.request_errors import InvalidRequest, ServerBusy  # noqa: E402

MODEL = "tiny-sentiment"
WORDS = "good bad film story music acting plot ending cast scene funny dull brilliant awful slow".split()


def distinct_texts(count: int) -> list[str]:
    """Texts of different lengths and words, so a mixed-up or mis-padded row cannot go unnoticed."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=2 + index % 11)) for index in range(count)]


async def _post_all(url: str, requests: list[tuple[str, dict]]) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        responses = await asyncio.gather(*(client.post(path, json=body) for path, body in requests))
    assert [r.status_code for r in responses] == [200] * len(requests), [r.text for r in responses if r.status_code != 200]
    return [r.json() for r in responses]


def test_32_concurrent_text_requests_each_get_their_own_result(
    live_classifier: LiveServer, classifier_folder: ServedFolder
) -> None:
    texts = distinct_texts(32)
    stats = live_classifier.app.state.batcher.stats  # type: ignore[attr-defined]
    calls_before, requests_before = stats.batches, stats.requests
    bodies = asyncio.run(_post_all(live_classifier.url, [("/predict", {"inputs": [text]}) for text in texts]))

    session = classifier_folder.onnx_session()
    for text, body in zip(texts, bodies):
        logits = session.run(["logits"], encode_alone(classifier_folder, text))[0][0]
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        scores = body["predictions"][0]["scores"]
        np.testing.assert_allclose([scores[k] for k in ("negative", "neutral", "positive")], probabilities, atol=1e-5)
    assert stats.requests - requests_before == 32
    assert stats.batches - calls_before < 32, "the batcher never grouped concurrent requests"
    assert stats.largest_batch > 1


def test_concurrent_token_tensor_requests_of_different_lengths(
    live_classifier: LiveServer, classifier_folder: ServedFolder
) -> None:
    texts = distinct_texts(12)
    feeds = [encode_alone(classifier_folder, text) for text in texts]
    requests = []
    for feed in feeds:
        inputs = [{"name": name, "shape": list(array.shape), "datatype": "INT64", "data": array.ravel().tolist()}
                  for name, array in feed.items()]
        requests.append((f"/v2/models/{MODEL}/infer", {"inputs": inputs, "outputs": [{"name": "logits"}]}))
    bodies = asyncio.run(_post_all(live_classifier.url, requests))

    session = classifier_folder.onnx_session()
    for feed, body in zip(feeds, bodies):
        (output,) = body["outputs"]
        assert output["name"] == "logits" and output["shape"] == [1, 3]
        np.testing.assert_allclose(output["data"], session.run(["logits"], feed)[0].ravel(), atol=1e-5)


def run_batcher(coroutine_factory, **options):
    """Run ``coroutine_factory(batcher)`` against a batcher of an echoing model; return its result and calls."""
    calls: list[dict[str, np.ndarray]] = []

    def model(feeds):
        calls.append(feeds)
        if (feeds["ids"] < 0).any():
            raise InvalidRequest("negative ids")
        return {"sums": feeds["ids"].sum(axis=1, keepdims=True), "echo": feeds["ids"] * 10}

    async def main():
        batcher = DynamicBatcher(model, pad_values={"ids": 0}, sequence_outputs={"echo": 1}, **options)
        await batcher.start()
        try:
            return await coroutine_factory(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main()), calls


def test_padding_is_cut_back_and_rows_go_to_their_callers() -> None:
    jobs = [np.array([[1, 2, 3]]), np.array([[4]]), np.array([[5, 6], [7, 8]])]
    results, calls = run_batcher(lambda b: asyncio.gather(*(b.submit({"ids": j}) for j in jobs)),
                                 max_batch_size=8, max_delay_ms=50)
    assert len(calls) == 1 and calls[0]["ids"].shape == (4, 3)
    for job, result in zip(jobs, results):
        np.testing.assert_array_equal(result["echo"], job * 10)
        np.testing.assert_array_equal(result["sums"], job.sum(axis=1, keepdims=True))


def test_a_failing_request_fails_alone() -> None:
    jobs = [np.array([[1, 2]]), np.array([[-1]]), np.array([[3]])]

    async def submit_all(batcher):
        return await asyncio.gather(*(batcher.submit({"ids": j}) for j in jobs), return_exceptions=True)

    results, calls = run_batcher(submit_all, max_batch_size=8, max_delay_ms=50)
    assert isinstance(results[1], InvalidRequest)
    np.testing.assert_array_equal(results[0]["echo"], [[10, 20]])
    np.testing.assert_array_equal(results[2]["echo"], [[30]])
    assert len(calls) == 4  # the merged call, then each job alone


def test_max_batch_size_one_turns_batching_off_and_the_queue_is_bounded() -> None:
    jobs = [np.array([[index + 1]]) for index in range(5)]
    _, calls = run_batcher(lambda b: asyncio.gather(*(b.submit({"ids": j}) for j in jobs)),
                           max_batch_size=1, max_delay_ms=50)
    assert [call["ids"].shape[0] for call in calls] == [1] * 5

    async def overfill(batcher):
        return await asyncio.gather(*(batcher.submit({"ids": j}) for j in jobs), return_exceptions=True)

    results, _ = run_batcher(overfill, max_batch_size=8, max_delay_ms=50, max_queue_rows=3)
    assert sum(isinstance(result, ServerBusy) for result in results) == 2
