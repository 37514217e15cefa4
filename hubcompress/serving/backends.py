"""The runtimes that run a served model: ONNX Runtime and OpenVINO, behind one small interface.

A backend is built from a model file and answers three things: the ``signature`` (inputs and
outputs, in the Open Inference Protocol's terms), the ``platform`` name the v2 metadata reports,
and :meth:`Backend.run` (named arrays in, every output by name out). Tokenizing, limits, pooling
and batching are the server's and do not depend on the runtime.

Example (``toy_folder`` is a tiny output folder with ``onnx/model.onnx``):
    >>> import numpy as np
    >>> from hubcompress.serving.backends import open_backend
    >>> backend = open_backend("onnxruntime", toy_folder / "onnx/model.onnx")
    >>> backend.platform, [spec.name for spec in backend.signature.inputs]
    ('onnxruntime_onnx', ['input_ids', 'attention_mask', 'token_type_ids'])
    >>> ids = np.array([[2, 4, 3]])
    >>> backend.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids})[
    ...     "last_hidden_state"].shape
    (1, 3, 4)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hubcompress.errors import ServingError
from hubcompress.serving.graph import GraphSignature, TensorSpec, read_graph_signature
from hubcompress.serving.request_errors import InferenceFailed, InvalidRequest

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """One loaded model file, ready to run."""

    runtime: str
    platform: str  # the v2 metadata's "platform" (Triton's names for the two backends)
    signature: GraphSignature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name; :class:`InvalidRequest` for inputs the model rejects,
        :class:`InferenceFailed` for any other failure."""
        ...


class OnnxRuntimeBackend:
    """An ONNX Runtime CPU session on an ``.onnx`` file."""

    runtime = "onnxruntime"
    platform = "onnxruntime_onnx"

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None, spinning: bool = False) -> None:
        import onnxruntime as ort  # late: only running a model needs it

        self.signature = read_graph_signature(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:
            # ONNX Runtime's threads spin for a while after each call by default; in a server that spin
            # takes the cores the event loop needs to parse the next requests, so batches come out
            # half full (one benchmark on 2 cores: mean batch 9 of 16 with spinning, 16 without).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        self._invalid_argument = _ort_invalid_argument()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(None, dict(feeds))
        except self._invalid_argument as err:
            raise InvalidRequest(f"the model rejected the inputs: {err}") from err
        except Exception as err:  # onnxruntime raises its own Fail/RuntimeException types
            raise InferenceFailed(f"ONNX Runtime failed: {type(err).__name__}: {err}") from err
        return {spec.name: value for spec, value in zip(self.signature.outputs, values)}


# OpenVINO element types -> Open Inference Protocol datatypes.
_OPENVINO_TO_V2 = {"f32": "FP32", "f16": "FP16", "f64": "FP64", "bf16": "BF16", "i64": "INT64", "i32": "INT32",
                   "i16": "INT16", "i8": "INT8", "u64": "UINT64", "u32": "UINT32", "u16": "UINT16", "u8": "UINT8",
                   "boolean": "BOOL"}


class OpenVINOBackend:
    """An OpenVINO CPU model compiled from an IR ``.xml`` (its ``.bin`` beside it), in f32 as the
    export validated it (:data:`exporters.openvino.RUNTIME_CONFIG`)."""

    runtime = "openvino"
    platform = "openvino"

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None, spinning: bool = False) -> None:
        from exporters.errors import ExportError
        from exporters.openvino import compile_openvino

        try:
            self.compiled = compile_openvino(path, threads)
        except ExportError as err:  # not installed, or a file it cannot read: serving cannot start
            raise ServingError(str(err)) from err
        self.signature = _openvino_signature(self.compiled, path)
        self._ports = {spec.name: port for spec, port in zip(self.signature.outputs, self.compiled.outputs)}
        # One request object, reused: the batcher calls run from one worker thread, and the lock keeps
        # any other caller from interleaving with it.
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            with self._lock:
                results = self._request.infer(dict(feeds))  # copies its outputs (share_outputs=False)
        except (TypeError, KeyError) as err:
            raise InvalidRequest(f"the model rejected the inputs: {err}") from err
        except Exception as err:  # OpenVINO raises RuntimeError for everything else
            raise InferenceFailed(f"OpenVINO failed: {type(err).__name__}: {err}") from err
        return {name: np.asarray(results[port]) for name, port in self._ports.items()}


def _openvino_signature(compiled: Any, path: str | os.PathLike[str]) -> GraphSignature:
    """The IR's inputs and outputs. An IR keeps no names for its dynamic axes, so they are given the
    export's names: axis 0 is the batch, a token input's axis 1 the sequence, and any other dynamic
    output axis can only follow the sequence (the inputs' one other dynamic axis)."""

    def spec(port: Any, other_axis: str | None) -> TensorSpec:
        kind = port.get_element_type().to_string()
        if kind not in _OPENVINO_TO_V2:
            raise ServingError(f"{path}: tensor {port.get_any_name()!r} has OpenVINO type {kind}, which the Open "
                               "Inference Protocol cannot carry")
        dims, names = [], []
        for axis, dim in enumerate(port.get_partial_shape()):
            dims.append(dim.get_length() if dim.is_static else -1)
            names.append(None if dim.is_static else ("batch" if axis == 0 else other_axis))
        return TensorSpec(port.get_any_name(), _OPENVINO_TO_V2[kind], tuple(dims), tuple(names))

    inputs = tuple(spec(port, "sequence") for port in compiled.inputs)
    sequence = "sequence" if any("sequence" in s.dim_names for s in inputs) else None
    return GraphSignature(inputs, tuple(spec(port, sequence) for port in compiled.outputs))


BACKENDS: dict[str, Callable[..., Backend]] = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVINOBackend}


def open_backend(runtime: str, path: str | os.PathLike[str], *, threads: int | None = None,
                 spinning: bool = False) -> Backend:
    """Load ``path`` in ``runtime`` (a key of :data:`BACKENDS`); ``threads`` caps its intra-op threads,
    ``spinning`` lets ONNX Runtime's threads busy-wait between calls (faster alone, worse in a server)."""
    return BACKENDS[runtime](Path(path), threads=threads, spinning=spinning)


def _ort_invalid_argument() -> type[Exception]:
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
    except ImportError:  # a future onnxruntime may move it; then every failure counts as a server failure
        return type("NeverRaised", (Exception,), {})
    return InvalidArgument
