"""A served image model (ViT image classification): requests carry images as base64-encoded
files (PNG, JPEG, ...), which the folder's own image processor turns into ``pixel_values``;
a v2 client may also send ``pixel_values`` itself.

``/predict`` takes ``{"inputs": ["<base64 image>", ...]}``; the v2 protocol's BYTES input is
called ``image``.

Example:
    >>> import base64, io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    >>> decode_image(base64.b64encode(buffer.getvalue()).decode(), "inputs[0]").size
    (4, 4)
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hubcompress.errors import ServingError
from hubcompress.serving.graph import TensorSpec
from hubcompress.serving.model_folder import ModelFolder
from hubcompress.serving.request_errors import InvalidRequest
from hubcompress.serving.runtime import ServedModel
from hubcompress.serving.settings import ServerSettings
from hubcompress.serving.tasks import SERVED_TASKS
from hubcompress.serving.text_encoding import EncodedTexts

logger = logging.getLogger(__name__)

IMAGE_INPUT = "image"  # the BYTES input of base64-encoded image files


def decode_image(value: str, where: str) -> Any:
    """A PIL image (RGB) from a base64-encoded image file; :class:`InvalidRequest` naming ``where`` if not."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(value, validate=True)
        return Image.open(io.BytesIO(raw)).convert("RGB")
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as error:
        raise InvalidRequest(f"{where} is not a base64-encoded image file (PNG, JPEG, ...): "
                             f"{type(error).__name__}") from None


class ServedImageModel(ServedModel):
    """:class:`ServedModel` for a model that reads ``pixel_values``: images in, the task's output out."""

    def __init__(self, folder: ModelFolder, settings: ServerSettings) -> None:  # noqa: D107 - see the class
        from transformers import AutoImageProcessor

        from hubcompress.serving.backends import open_backend

        self.folder, self.settings = folder, settings
        self.backend = open_backend(folder.runtime, folder.model_path, threads=settings.intra_op_threads)
        self.signature = self.backend.signature
        pixels = self.signature.input("pixel_values")
        if pixels is None:
            raise ServingError(f"{folder.model_path} has no pixel_values input; an image model reads one")
        self.processor = AutoImageProcessor.from_pretrained(folder.path)
        self.pad_values: dict[str, int] = {}  # images come at one size: batches merge as they are
        self.served = SERVED_TASKS[self.task]
        self.task_output, self._task_source = self.served.output, self.served.source
        if self.signature.output(self._task_source) is None:
            raise ServingError(f"{folder.model_path} lacks the {self._task_source!r} output that {self.task} needs")
        self.pooling = None
        logger.info("serving %s (%s) from %s in %s", self.name, self.task, folder.model_path, self.backend.runtime)

    @property
    def max_tokens(self) -> int:
        return 0  # images have no token limit

    @property
    def sequence_outputs(self) -> dict[str, int]:
        return {}

    def input_specs(self) -> list[TensorSpec]:
        return [*self.signature.inputs, TensorSpec(IMAGE_INPUT, "BYTES", (-1,), ("batch",))]

    def encode_texts(self, texts: Sequence[str]) -> EncodedTexts:
        """Decode base64 image files and process them into ``pixel_values`` (the name is the text models')."""
        images = [decode_image(value, f"inputs[{i}]") for i, value in enumerate(texts)]
        pixels = self.processor(images, return_tensors="np")["pixel_values"].astype(np.float32)
        return EncodedTexts({"pixel_values": pixels}, [False] * len(images))

    def complete_token_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check the ``pixel_values`` a v2 client sent: its shape must be the graph's."""
        spec = self.signature.input("pixel_values")
        assert spec is not None
        unknown = sorted(set(feeds) - {"pixel_values"})
        if unknown or "pixel_values" not in feeds:
            raise InvalidRequest(f"send pixel_values or {IMAGE_INPUT!r} (base64 images); got {sorted(feeds)}")
        pixels = feeds["pixel_values"]
        expected = [d for d in spec.dims[1:]]
        if pixels.ndim != len(spec.dims) or any(d > 0 and d != s for d, s in zip(expected, pixels.shape[1:])):
            raise InvalidRequest(f"pixel_values must have shape [rows, {', '.join(map(str, expected))}], "
                                 f"got {list(pixels.shape)}")
        if pixels.shape[0] > self.settings.max_items:
            raise InvalidRequest(f"{pixels.shape[0]} rows in one request, over this server's limit of "
                                 f"{self.settings.max_items}")
        return {"pixel_values": pixels.astype(np.float32)}
