"""The HTTP application: Open Inference Protocol (KServe v2) endpoints plus a simple ``/predict``.

Every refusal is a 4xx with ``{"error": "..."}`` (the protocol's error body); bodies are read
under a size limit before any parsing, so no request can make the server allocate without bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

import hubcompress
from hubcompress.serving.batcher import DynamicBatcher
from hubcompress.serving.binary_tensors import split_binary_body
from hubcompress.serving.protocol import (
    build_infer_response,
    decode_json,
    parse_infer_request,
    parse_predict_body,
    predict_parameters,
)
from hubcompress.serving.request_errors import InvalidRequest, ModelNotFound, PayloadTooLarge, RequestError
from hubcompress.serving.runtime import TEXT_INPUT, ServedModel

logger = logging.getLogger(__name__)

MODEL_VERSION = "1"
_HEADER_LENGTH = "inference-header-content-length"


def create_app(model: ServedModel) -> FastAPI:
    """A FastAPI app serving ``model``; the batcher starts and stops with the app's lifespan.

    The app's ``state.batcher`` holds the :class:`DynamicBatcher` (its ``stats`` count batches).

    Example (``toy_folder`` is a tiny output folder; ``"out/demo"`` or a repo id work alike):
        >>> from fastapi.testclient import TestClient
        >>> from hubcompress.serving import create_app, load_served_model
        >>> app = create_app(load_served_model(toy_folder))
        >>> with TestClient(app) as client:
        ...     answer = client.post("/predict", json={"inputs": ["a fine day"]}).json()
        ...     refusal = client.post("/predict", json={"inputs": [42]})
        >>> answer["task"], len(answer["embeddings"][0])
        ('feature-extraction', 4)
        >>> refusal.status_code, refusal.json()
        (400, {'error': 'inputs[0] must be a string, got int'})
    """
    settings = model.settings
    batcher = DynamicBatcher(
        model.run,
        max_batch_size=settings.max_batch_size,
        max_delay_ms=settings.max_delay_ms,
        pad_values=model.pad_values,
        sequence_outputs=model.sequence_outputs,
        max_queue_rows=settings.max_queue_rows,
    )
    input_specs = {spec.name: spec for spec in model.input_specs()}
    output_specs = {spec.name: spec for spec in model.output_specs()}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title=f"hubcompress serving {model.name}", version=hubcompress.__version__, lifespan=lifespan)
    app.state.model = model
    app.state.batcher = batcher
    _install_error_handlers(app)

    def check_model(name: str, version: str | None = None) -> None:
        if name != model.name:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {model.name!r}")
        if version not in (None, "", MODEL_VERSION):
            raise ModelNotFound(f"model {name!r} has no version {version!r}; it has version {MODEL_VERSION!r}")

    async def run_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = await batcher.submit(feeds)
        return model.add_task_output(feeds, outputs)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "hubcompress", "version": hubcompress.__version__,
                "extensions": ["binary_tensor_data", "statistics"]}

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": batcher.running}, status_code=200 if batcher.running else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        check_model(name, version)
        return {
            "name": model.name,
            "versions": [MODEL_VERSION],
            "platform": model.platform,
            "inputs": [spec.to_metadata() for spec in input_specs.values()],
            "outputs": [spec.to_metadata() for spec in output_specs.values()],
            "parameters": {"task": model.task, "max_tokens": model.max_tokens},
        }

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        check_model(name, version)
        return JSONResponse({"name": model.name, "ready": batcher.running}, status_code=200 if batcher.running else 503)

    @app.get("/v2/models/{name}/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def model_stats(name: str, version: str | None = None) -> dict[str, Any]:
        check_model(name, version)
        stats = batcher.stats
        return {"model_stats": [{"name": model.name, "version": MODEL_VERSION, "inference_count": stats.rows,
                                 "execution_count": stats.batches, "batching": stats.to_dict()}]}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        check_model(name, version)
        raw = await read_body(request, settings.max_body_bytes)
        header, binary = split_binary_body(raw, request.headers.get(_HEADER_LENGTH))
        parsed = parse_infer_request(decode_json(header), binary, input_specs, list(output_specs), settings.max_items)
        if parsed.texts is not None:
            feeds = model.encode_texts(parsed.texts).feeds
        else:
            feeds = model.complete_token_feeds(parsed.tensors)
        outputs = await run_feeds(feeds)
        body, header_length = build_infer_response(model.name, parsed, outputs, output_specs)
        if header_length is None:
            return Response(body, media_type="application/json")
        return Response(body, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(header_length)})

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        raw = await read_body(request, settings.max_body_bytes)
        body = decode_json(raw)
        if model.served.encode_request is not None:  # inputs that are not texts (question / context pairs)
            encoded = model.served.encode_request(model, body)
        else:
            encoded = model.encode_texts(parse_predict_body(body, settings.max_items))
        encoded.parameters = predict_parameters(body)
        outputs = await run_feeds(encoded.feeds)
        # Serialised here: FastAPI's own encoder walks every float of every embedding, which costs
        # more CPU than the model call for a short text.
        answer = model.predictions(outputs[model.task_output], encoded)
        return Response(json.dumps(answer, separators=(",", ":")).encode(), media_type="application/json")

    logger.debug("created the app for %s (inputs %s)", model.name, [*input_specs, TEXT_INPUT])
    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (checked while streaming,
    so a lying or absent Content-Length cannot get a bigger body in)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes, over this server's limit of {limit}")
    if request.headers.get("content-encoding", "identity") not in ("identity", ""):
        raise InvalidRequest("compressed request bodies are not supported; send the body uncompressed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        if exc.status >= 500:
            logger.error("request failed: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {exc.errors()}"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while serving a request")
        return JSONResponse({"error": f"internal server error: {type(exc).__name__}"}, status_code=500)
