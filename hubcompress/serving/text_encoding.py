"""Texts to token tensors with the folder's own tokenizer, under the server's length limits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hubcompress.errors import ServingError
from hubcompress.serving.request_errors import InvalidRequest
from hubcompress.serving.settings import OverflowPolicy

logger = logging.getLogger(__name__)


@dataclass
class EncodedTexts:
    """Token tensors for a list of texts (right-padded to the longest) and which texts were cut."""

    feeds: dict[str, np.ndarray]
    truncated: list[bool]
    texts: list[str] = field(default_factory=list)  # as sent
    parameters: dict[str, Any] = field(default_factory=dict)  # the request's, for a task that reads some


class TextEncoder:
    """Tokenize texts into ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, padded).

    It runs the fast tokenizer's Rust core directly (a private copy, so the padding and truncation
    stored in ``tokenizer.json`` cannot leak in), which encodes exactly what
    ``tokenizer(texts, padding=True)`` would, and says which texts were truncated.

    Args:
        tokenizer: a fast transformers tokenizer (see :func:`load_fast_tokenizer`).
        max_tokens: longest sequence, special tokens included.
        overflow: ``"truncate"`` or ``"reject"`` texts longer than ``max_tokens``.
        max_text_chars: longest text in characters, checked before tokenizing.

    Example:
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from transformers import PreTrainedTokenizerFast
        >>> core = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3}, unk_token="[UNK]"))
        >>> core.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]")
        >>> encoded = TextEncoder(tokenizer, max_tokens=2).encode(["hello", "hello big world"])
        >>> encoded.feeds["input_ids"].tolist(), encoded.truncated
        ([[2, 0], [2, 1]], [False, True])
    """

    def __init__(
        self,
        tokenizer: object,
        *,
        max_tokens: int,
        overflow: OverflowPolicy = "truncate",
        max_text_chars: int = 20_000,
    ) -> None:
        self.tokenizer = tokenizer  # special tokens and decoding, for the answers of some tasks
        self.model_max_length = getattr(tokenizer, "model_max_length", None)
        pad_token_id = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad_token_id) if pad_token_id is not None else 0
        self.max_tokens = int(max_tokens)
        self.overflow = overflow
        self.max_text_chars = int(max_text_chars)
        from tokenizers import Tokenizer

        self._core = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # type: ignore[attr-defined]
        self._core.no_padding()
        if overflow == "truncate":
            self._core.enable_truncation(max_length=self.max_tokens)
        else:
            # Rejecting needs the full length; max_text_chars bounds what tokenizing it can cost.
            self._core.no_truncation()

    def encode(self, texts: Sequence[str]) -> EncodedTexts:
        """Encode ``texts``; raises :class:`InvalidRequest` naming the first text over a limit."""
        for index, text in enumerate(texts):
            if len(text) > self.max_text_chars:
                raise InvalidRequest(
                    f"text {index} has {len(text)} characters, over this server's limit of {self.max_text_chars}; "
                    "split it or shorten it"
                )
        encodings = self._core.encode_batch(list(texts))
        if self.overflow == "reject":
            for index, encoding in enumerate(encodings):
                if len(encoding.ids) > self.max_tokens:
                    raise InvalidRequest(
                        f"text {index} is {len(encoding.ids)} tokens long, over the model's limit of "
                        f"{self.max_tokens}; shorten it (this server rejects rather than truncates)"
                    )
        longest = max(len(encoding.ids) for encoding in encodings)
        shape = (len(encodings), longest)
        ids = np.full(shape, self.pad_token_id, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            ids[row, :length] = encoding.ids
            mask[row, :length] = encoding.attention_mask
            types[row, :length] = encoding.type_ids
        truncated = [bool(encoding.overflowing) for encoding in encodings]
        return EncodedTexts({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, truncated, list(texts))


def load_fast_tokenizer(folder: str | Path) -> Any:  # a transformers fast tokenizer
    """The folder's tokenizer as a fast (Rust-backed) transformers tokenizer.

    Example:
        >>> import tempfile
        >>> load_fast_tokenizer(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hubcompress.errors.ServingError: ...no usable tokenizer...
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # transformers raises OSError, ValueError, KeyError... for a missing or bad tokenizer
        raise ServingError(
            f"{folder} holds no usable tokenizer ({type(err).__name__}: {str(err)[:300]}); save one next to the "
            "model with tokenizer.save_pretrained(folder)"
        ) from err
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ServingError(f"{folder}: the tokenizer has no fast (tokenizers) version, which the server needs")
    return tokenizer
