"""One served model: a runtime session (ONNX Runtime or OpenVINO, :mod:`hubcompress.serving.backends`),
its tokenizer, its task, its pooling, and the checks on its inputs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hubcompress.errors import ServingError
from hubcompress.pooling import Pooling
from hubcompress.serving.backends import Backend, open_backend
from hubcompress.serving.graph import GraphSignature, TensorSpec
from hubcompress.serving.model_folder import ModelFolder, open_model_folder
from hubcompress.serving.request_errors import InvalidRequest
from hubcompress.serving.settings import ServerSettings
from hubcompress.serving.tasks import SERVED_TASKS, ServedTask
from hubcompress.serving.text_encoding import EncodedTexts, TextEncoder, load_fast_tokenizer

logger = logging.getLogger(__name__)

TEXT_INPUT = "text"  # the BYTES input that carries raw texts; the token tensors keep the graph's names
# What a missing optional token tensor means, for a client that sends only input_ids.
_DEFAULT_FEEDS = {"attention_mask": 1, "token_type_ids": 0}


class ServedModel:
    """A model folder loaded for serving, its model file in the runtime that runs it.

    Build one with :func:`load_served_model`. :meth:`run` is what the batcher calls (on its worker
    thread); the other methods prepare inputs and shape results on the event loop.
    """

    def __init__(self, folder: ModelFolder, settings: ServerSettings) -> None:
        self.folder = folder
        self.settings = settings
        self.backend: Backend = open_backend(folder.runtime, folder.model_path, threads=settings.intra_op_threads)
        self.signature: GraphSignature = self.backend.signature
        if self.signature.input("input_ids") is None:
            raise ServingError(f"{folder.model_path} has no input_ids input; the server serves token-sequence models")

        positions = int(folder.config.get("max_position_embeddings") or 512)
        if settings.max_tokens is not None and settings.max_tokens > positions:
            raise ServingError(f"max_tokens={settings.max_tokens} is over the model's {positions} position embeddings")
        tokenizer = load_fast_tokenizer(folder.path)
        limit = settings.max_tokens or folder.token_limit(getattr(tokenizer, "model_max_length", None))
        self.encoder = TextEncoder(tokenizer, max_tokens=limit, overflow=settings.overflow,
                                   max_text_chars=settings.max_text_chars)
        self.vocab_size = int(folder.config.get("vocab_size") or 0)
        self.type_vocab_size = int(folder.config.get("type_vocab_size") or 1)

        names = {spec.name for spec in self.signature.inputs}
        # Padding is only invisible to the model when a mask hides it; without one the batcher
        # merges only requests of equal length.
        paddable = {"input_ids": self.encoder.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        self.pad_values = {n: v for n, v in paddable.items() if n in names} if "attention_mask" in names else {}
        self.served: ServedTask = SERVED_TASKS[self.task]
        self.task_output, self._task_source = self.served.output, self.served.source
        if self.signature.output(self._task_source) is None:
            raise ServingError(f"{folder.model_path} lacks the {self._task_source!r} output that {self.task} needs")
        # The folder's own sentence-transformers modules say how embeddings are pooled, so the server
        # answers what SentenceTransformer(folder).encode would; a classifier pools nothing.
        self.pooling: Pooling | None = Pooling.from_folder(folder.path) if self.served.pooled else None
        logger.info("serving %s (%s) from %s in %s, max %d tokens", self.name, self.task, folder.model_path,
                    self.backend.runtime, limit)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def platform(self) -> str:
        """The v2 metadata's ``platform``: ``onnxruntime_onnx`` or ``openvino``."""
        return self.backend.platform

    @property
    def task(self) -> str:
        return self.folder.task

    @property
    def max_tokens(self) -> int:
        return self.encoder.max_tokens

    @property
    def sequence_outputs(self) -> dict[str, int]:
        """Outputs with an axis that follows the inputs' sequence axis (named alike in the graph)."""
        sequence_name = self.signature.input("input_ids").dim_names[1:2]  # type: ignore[union-attr]
        found: dict[str, int] = {}
        for spec in self.signature.outputs:
            for axis, dim_name in enumerate(spec.dim_names):
                if axis > 0 and dim_name is not None and (dim_name,) == tuple(sequence_name):
                    found[spec.name] = axis
        return found

    def input_specs(self) -> list[TensorSpec]:
        """The graph's inputs, then the ``text`` BYTES input that the server tokenizes itself."""
        return [*self.signature.inputs, TensorSpec(TEXT_INPUT, "BYTES", (-1,), ("batch",))]

    def output_specs(self) -> list[TensorSpec]:
        """The graph's outputs, then the task's own (probabilities, or the pooled sentence embedding)."""
        source = self.signature.output(self._task_source)
        assert source is not None
        width = self.served.width(self, source.dims[-1])
        if self.served.per_token:
            return [*self.signature.outputs, TensorSpec(self.task_output, "FP32", (-1, -1, width),
                                                        ("batch", "sequence", None))]
        return [*self.signature.outputs, TensorSpec(self.task_output, "FP32", (-1, width), ("batch", None))]

    def encode_texts(self, texts: Sequence[str]) -> EncodedTexts:
        """Tokenize ``texts`` into the graph's inputs (see :class:`TextEncoder`)."""
        encoded = self.encoder.encode(texts)
        encoded.feeds = {spec.name: encoded.feeds[spec.name] for spec in self.signature.inputs}
        return encoded

    def complete_token_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check token tensors a client sent and fill in a missing mask or segment ids.

        Raises :class:`InvalidRequest` for an unknown or missing input, a shape other than
        ``[rows, sequence]`` shared by all, or ids outside the vocabulary (which would make
        ONNX Runtime fail, or worse, read past a table).
        """
        known = {spec.name for spec in self.signature.inputs}
        unknown = sorted(set(feeds) - known)
        if unknown:
            raise InvalidRequest(f"unknown input(s) {unknown}; this model takes {sorted(known)} or {TEXT_INPUT!r}")
        ids = feeds.get("input_ids")
        if ids is None:
            raise InvalidRequest("token inputs must include input_ids")
        if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise InvalidRequest(f"input_ids must have shape [rows, sequence] with both above 0, got {list(ids.shape)}")
        rows, length = ids.shape
        if rows > self.settings.max_items:
            raise InvalidRequest(f"{rows} rows in one request, over this server's limit of {self.settings.max_items}")
        if length > self.max_tokens:
            raise InvalidRequest(f"sequences of {length} tokens are over the model's limit of {self.max_tokens}")
        complete = dict(feeds)
        for spec in self.signature.inputs:
            if spec.name not in complete:
                if spec.name not in _DEFAULT_FEEDS:
                    raise InvalidRequest(f"missing input {spec.name!r}")
                complete[spec.name] = np.full(ids.shape, _DEFAULT_FEEDS[spec.name], dtype=np.int64)
            if complete[spec.name].shape != ids.shape:
                raise InvalidRequest(
                    f"input {spec.name!r} has shape {list(complete[spec.name].shape)}, input_ids {list(ids.shape)}; "
                    "all token inputs must have the same shape"
                )
        _check_range(complete["input_ids"], "input_ids", 0, self.vocab_size)
        if "attention_mask" in complete:
            _check_range(complete["attention_mask"], "attention_mask", 0, 2)
        if "token_type_ids" in complete:
            _check_range(complete["token_type_ids"], "token_type_ids", 0, self.type_vocab_size)
        return {spec.name: complete[spec.name] for spec in self.signature.inputs}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One runtime call on ``feeds``: every graph output by name."""
        return self.backend.run(feeds)

    def add_task_output(self, feeds: Mapping[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``outputs`` plus the task's own output (:mod:`hubcompress.serving.tasks`): softmax of the
        logits, or the sentence embedding pooled (and normalised) as the folder's sentence-transformers
        modules say."""
        return {**outputs, self.task_output: self.served.derive(self, feeds, outputs)}

    def predictions(self, task_output: np.ndarray, encoded: EncodedTexts) -> dict[str, object]:
        """The ``/predict`` answer for the texts ``encoded`` holds: labels and scores, or embeddings."""
        return {"model": self.name, "task": self.task, **self.served.predict(self, task_output, encoded)}


def load_served_model(source: str | Path, settings: ServerSettings | None = None) -> ServedModel:
    """Load an output folder (or hub repo id) for serving: runtime session, tokenizer, task and limits.

    The model file is the one ``settings.backend`` and ``settings.int8`` narrow to, fastest first
    by report.json (see :func:`hubcompress.serving.artifacts.choose_artifact`); the choice and its
    reason are logged.

    Raises:
        ServingError: the folder lacks a model file that fits or a tokenizer, or its task is not served.
        HubError: ``source`` is not a folder and cannot be fetched from the hub.

    Example (``toy_folder`` is a tiny output folder; ``"out/demo"`` or a repo id work alike):
        >>> from hubcompress.serving import ServerSettings, load_served_model
        >>> model = load_served_model(toy_folder, ServerSettings(max_batch_size=8))
        >>> model.name, model.task, model.max_tokens
        ('toy', 'feature-extraction', 16)
        >>> feeds = model.encode_texts(["a fine day", "good"]).feeds
        >>> feeds["input_ids"].tolist()
        [[2, 4, 5, 6, 3], [2, 7, 3, 0, 0]]
        >>> outputs = model.add_task_output(feeds, model.run(feeds))
        >>> outputs["sentence_embedding"].shape
        (2, 4)
    """
    settings = settings or ServerSettings()
    folder = open_model_folder(source, int8=settings.int8, backend=settings.backend, name=settings.model_name)
    if folder.artifact is not None:
        logger.info("serving %s in %s (%s): %s", folder.artifact.path, folder.runtime, folder.artifact.name,
                    folder.reason)
    if SERVED_TASKS[folder.task].modality == "image":
        from hubcompress.serving.image_model import ServedImageModel

        return ServedImageModel(folder, settings)
    return ServedModel(folder, settings)


def _check_range(values: np.ndarray, name: str, low: int, high: int) -> None:
    if high <= low:
        return  # the config does not say; let ONNX Runtime judge
    if values.size and (values.min() < low or values.max() >= high):
        raise InvalidRequest(f"{name} values must lie in [{low}, {high - 1}], got [{values.min()}, {values.max()}]")
