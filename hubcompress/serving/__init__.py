"""Serve an output folder's ONNX model over HTTP, and export it as a Triton model repository.

The server speaks the Open Inference Protocol (KServe v2), so a client written against it (e.g.
``tritonclient.http``) works unchanged against Triton Inference Server or KServe, plus a simple
``POST /predict {"inputs": ["text", ...]}``. Concurrent requests are grouped by a dynamic batcher;
bad input gets a 4xx with ``{"error": ...}``, never a 500.

    hubcompress serve out/demo --int8                 # http://127.0.0.1:8080, onnx/model_quantized.onnx
    hubcompress export-triton out/demo --repository model_repository/

The folder's files are found by the names in :mod:`exporters.onnx.file_names` (``onnx/model.onnx``,
``--int8``: ``onnx/model_quantized.onnx``); sentence embeddings are pooled as the folder's
sentence-transformers ``modules.json`` says (:class:`hubcompress.pooling.Pooling`; mean pooling and
normalisation when it has none).

Needs the ``serve`` extra (fastapi, uvicorn) besides ``export`` (onnx, onnxruntime).

Example:
    >>> from hubcompress.serving import ServerSettings
    >>> ServerSettings(max_batch_size=16, max_delay_ms=2).batching
    True
"""

from __future__ import annotations

from hubcompress.serving.batcher import BatchStats, DynamicBatcher
from hubcompress.serving.graph import GraphSignature, TensorSpec, read_graph_signature
from hubcompress.serving.model_folder import ModelFolder, detect_task, open_model_folder
from hubcompress.serving.runtime import ServedModel, load_served_model
from hubcompress.serving.server import BackgroundServer, serve
from hubcompress.serving.settings import DEFAULT_HOST, DEFAULT_PORT, ServerSettings
from hubcompress.serving.triton import TritonExport, export_triton_repository



def __getattr__(name: str) -> object:
    # create_app needs fastapi (the serve extra); importing it lazily keeps export_triton_repository
    # and the rest usable with the export extra alone.
    if name == "create_app":
        from hubcompress.serving.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "BackgroundServer",
    "BatchStats",
    "DynamicBatcher",
    "GraphSignature",
    "ModelFolder",
    "ServedModel",
    "ServerSettings",
    "TensorSpec",
    "TritonExport",
    "create_app",
    "detect_task",
    "export_triton_repository",
    "load_served_model",
    "open_model_folder",
    "read_graph_signature",
    "serve",
]
