"""The knobs of the server: batching, request limits, and what to do with over-long text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hubcompress.errors import ServingError
from hubcompress.serving.artifacts import RUNTIMES

OverflowPolicy = Literal["truncate", "reject"]

DEFAULT_HOST = "127.0.0.1"  # loopback unless the user says otherwise: a server is not a public service by accident
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServerSettings:
    """How one served model batches work and which requests it refuses.

    Args:
        model_name: the name clients use in ``/v2/models/{name}``; ``None`` takes the folder's name.
        int8: ``True`` serves an int8 file (``onnx/model_quantized.onnx``,
            ``openvino/openvino_model_qint8_quantized.xml``), ``False`` an fp32 one (``onnx/model.onnx``,
            ``openvino/openvino_model.xml``), ``None`` whichever report.json says is fastest among
            those that passed validation (see :func:`hubcompress.serving.artifacts.choose_artifact`).
        backend: ``"onnxruntime"`` or ``"openvino"``; ``None`` lets the same choice pick the runtime.
        max_batch_size: most rows one ONNX Runtime call takes; 1 turns dynamic batching off.
        max_delay_ms: how long the first queued request waits for others to join its batch. 5 ms is
            about how long 16 clients' next requests take to arrive once a batch is answered, on a
            small machine; a lone request pays at most this much extra latency.
        max_items: most texts (or tensor rows) in one request.
        max_text_chars: longest text accepted, in characters, before tokenizing (bounds tokenizer time).
        max_tokens: longest token sequence; ``None`` reads it from the folder (sentence-transformers'
            ``max_seq_length``, the tokenizer's ``model_max_length``, the position embeddings).
        overflow: ``"truncate"`` cuts texts longer than ``max_tokens``; ``"reject"`` answers 400.
        max_body_bytes: largest request body; a bigger one gets 413 before it is read in full.
        max_queue_rows: rows waiting for the model beyond which new requests get 503 (back-pressure).
        intra_op_threads: the runtime's threads per call; ``None`` lets it use every core.

    Example:
        >>> from hubcompress.serving import ServerSettings
        >>> ServerSettings(max_batch_size=1).batching
        False
        >>> ServerSettings(overflow="drop")
        Traceback (most recent call last):
        ...
        hubcompress.errors.ServingError: overflow must be 'truncate' or 'reject', not 'drop'
    """

    model_name: str | None = None
    int8: bool | None = None
    backend: str | None = None
    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    max_items: int = 64
    max_text_chars: int = 20_000
    max_tokens: int | None = None
    overflow: OverflowPolicy = "truncate"
    max_body_bytes: int = 4 * 1024 * 1024
    max_queue_rows: int = 4096
    intra_op_threads: int | None = None

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in RUNTIMES:
            raise ServingError(f"backend must be one of {', '.join(RUNTIMES)}, not {self.backend!r}")
        if self.overflow not in ("truncate", "reject"):
            raise ServingError(f"overflow must be 'truncate' or 'reject', not {self.overflow!r}")
        positive = {
            "max_batch_size": self.max_batch_size,
            "max_items": self.max_items,
            "max_text_chars": self.max_text_chars,
            "max_body_bytes": self.max_body_bytes,
            "max_queue_rows": self.max_queue_rows,
        }
        if self.max_tokens is not None:
            positive["max_tokens"] = self.max_tokens
        if self.intra_op_threads is not None:
            positive["intra_op_threads"] = self.intra_op_threads
        for key, value in positive.items():
            if value < 1:
                raise ServingError(f"{key} must be at least 1, got {value}")
        if self.max_delay_ms < 0:
            raise ServingError(f"max_delay_ms must be 0 or more, got {self.max_delay_ms}")

    @property
    def batching(self) -> bool:
        """Whether concurrent requests may share one model call."""
        return self.max_batch_size > 1
