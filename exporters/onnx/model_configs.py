"""Built-in export configs: BERT-like text encoders (MPNet, DeBERTa-v2/v3, ALBERT and ModernBERT
among them), GPT-2 and ViT.

Each class is a few declarative lines; the shared dummy-input logic lives in the two bases.
Importing this module registers the classes (``exporters.onnx`` does it for you).

Example:
    >>> from exporters.onnx import get_export_config
    >>> cfg = get_export_config("distilbert", "feature-extraction")
    >>> sorted(cfg.generate_dummy_inputs(batch_size=3, sequence_length=5))
    ['attention_mask', 'input_ids']
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from exporters.onnx.registry import AxisMap, OnnxConfig, register_export_config

_TOKENS: AxisMap = {0: "batch", 1: "sequence"}
_HIDDEN_STATES = {"last_hidden_state": {0: "batch", 1: "sequence"}}
_POOLED = {"pooler_output": {0: "batch"}}
_SEQUENCE_LOGITS = {"logits": {0: "batch"}}
_TOKEN_LOGITS = {"logits": {0: "batch", 1: "sequence"}}  # a row of scores per token
_SPAN_LOGITS = {"start_logits": {0: "batch", 1: "sequence"}, "end_logits": {0: "batch", 1: "sequence"}}
# What every bidirectional text encoder exports, per task.
_ENCODER_TASKS = {
    "feature-extraction": _HIDDEN_STATES,
    "text-classification": _SEQUENCE_LOGITS,
    "token-classification": _TOKEN_LOGITS,
    "question-answering": _SPAN_LOGITS,
    "fill-mask": _TOKEN_LOGITS,
}


def padded_lengths(batch_size: int, sequence_length: int) -> np.ndarray:
    """Valid lengths for a padded batch: the first row is full, the last about half as long."""
    shortest = max(1, sequence_length // 2)
    return np.linspace(sequence_length, shortest, num=batch_size).round().astype(np.int64)


class TextOnnxConfig(OnnxConfig):
    """Token-sequence models: int64 ``input_ids`` plus optional mask and segment ids.

    ``INPUT_NAMES`` picks the inputs, in graph order, from ``input_ids``, ``attention_mask`` and
    ``token_type_ids``.
    """

    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")

    @property
    def inputs(self) -> dict[str, AxisMap]:
        return {name: dict(_TOKENS) for name in self.INPUT_NAMES}

    def generate_dummy_inputs(
        self, batch_size: int = 2, sequence_length: int = 8, *, padded: bool = False, seed: int = 0
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        vocab_size = int(self.config_value("vocab_size", 100))
        # Models without a pad token (GPT-2) ignore masked positions, so any in-vocabulary id will do.
        pad_id = int(self.config_value("pad_token_id", 0))
        shape = (batch_size, sequence_length)
        # Draw from the vocabulary minus the pad id, so padding is only where the mask says so.
        ids = rng.integers(0, max(vocab_size - 1, 1), size=shape, dtype=np.int64)
        ids = np.where(ids >= pad_id, ids + 1, ids) if vocab_size > 1 else ids
        lengths = padded_lengths(batch_size, sequence_length) if padded else np.full(batch_size, sequence_length)
        mask = (np.arange(sequence_length)[None, :] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask == 1, ids, pad_id)
        if int(self.config_value("type_vocab_size", 2)) > 1:
            # A sentence pair: the second half of each valid span is segment 1.
            second_half = np.arange(sequence_length)[None, :] >= (lengths[:, None] + 1) // 2
            segments = (second_half & (mask == 1)).astype(np.int64)
        else:
            segments = np.zeros_like(ids)
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}
        return {name: available[name] for name in self.INPUT_NAMES}


@register_export_config("bert")
class BertOnnxConfig(TextOnnxConfig):
    INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
    SUPPORTED_TASKS = {**_ENCODER_TASKS, "feature-extraction": {**_HIDDEN_STATES, **_POOLED}}


@register_export_config("roberta", "xlm-roberta", "camembert")
class RobertaOnnxConfig(TextOnnxConfig):
    # RoBERTa has a single segment, so token_type_ids would be a constant input.
    INPUT_NAMES = ("input_ids", "attention_mask")
    SUPPORTED_TASKS = BertOnnxConfig.SUPPORTED_TASKS


@register_export_config("electra")
class ElectraOnnxConfig(TextOnnxConfig):
    INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
    SUPPORTED_TASKS = _ENCODER_TASKS


@register_export_config("distilbert")
class DistilBertOnnxConfig(TextOnnxConfig):
    INPUT_NAMES = ("input_ids", "attention_mask")
    SUPPORTED_TASKS = _ENCODER_TASKS


@register_export_config("mpnet")
class MPNetOnnxConfig(TextOnnxConfig):
    # MPNet has no segment embeddings; its relative position bias is computed inside the graph.
    INPUT_NAMES = ("input_ids", "attention_mask")
    SUPPORTED_TASKS = BertOnnxConfig.SUPPORTED_TASKS


@register_export_config("deberta-v2")
class DebertaV2OnnxConfig(TextOnnxConfig):
    """DeBERTa-v2 and -v3 (their checkpoints set ``type_vocab_size`` to 0: no segment input)."""

    INPUT_NAMES = ("input_ids", "attention_mask")
    SUPPORTED_TASKS = _ENCODER_TASKS


@register_export_config("albert")
class AlbertOnnxConfig(TextOnnxConfig):
    INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
    SUPPORTED_TASKS = BertOnnxConfig.SUPPORTED_TASKS


@register_export_config("modernbert")
class ModernBertOnnxConfig(TextOnnxConfig):
    """ModernBERT: rotary positions and the sliding-window mask are computed inside the graph."""

    INPUT_NAMES = ("input_ids", "attention_mask")
    SUPPORTED_TASKS = _ENCODER_TASKS


@register_export_config("gpt2")
class GPT2OnnxConfig(TextOnnxConfig):
    """GPT-2 without a KV cache.

    ``GPT2ForSequenceClassification`` finds each row's last token through ``config.pad_token_id``,
    so set it (e.g. to the eos id) before exporting the text-classification task.
    """

    INPUT_NAMES = ("input_ids", "attention_mask")
    SUPPORTED_TASKS = {"feature-extraction": _HIDDEN_STATES, "text-classification": _SEQUENCE_LOGITS,
                       "text-generation": _TOKEN_LOGITS}
    # The cache is a Python object, not a tensor; exporting it would add dozens of outputs.
    FORWARD_KWARGS: ClassVar[dict[str, Any]] = {"use_cache": False}


@register_export_config("vit")
class ViTOnnxConfig(OnnxConfig):
    """Vision Transformer: only the batch axis is dynamic, the image size is fixed by the patch grid."""

    SUPPORTED_TASKS = {
        "feature-extraction": {"last_hidden_state": {0: "batch"}, **_POOLED},
        "image-classification": _SEQUENCE_LOGITS,
    }

    @property
    def inputs(self) -> dict[str, AxisMap]:
        return {"pixel_values": {0: "batch"}}

    def generate_dummy_inputs(
        self, batch_size: int = 2, sequence_length: int = 8, *, padded: bool = False, seed: int = 0
    ) -> dict[str, np.ndarray]:
        # Images have no sequence axis and no padding; both arguments are accepted and ignored.
        rng = np.random.default_rng(seed)
        channels = int(self.config_value("num_channels", 3))
        size = int(self.config_value("image_size", 224))
        pixels = rng.standard_normal((batch_size, channels, size, size)).astype(np.float32)
        return {"pixel_values": pixels}
