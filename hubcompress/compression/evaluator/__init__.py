"""Evaluators: how compressors hook into a training loop they do not own."""

from __future__ import annotations

from .base import Evaluator
from .torch_evaluator import TorchEvaluator

__all__ = ["Evaluator", "LightningEvaluator", "TorchEvaluator", "TransformersEvaluator"]


def __getattr__(name: str):  # transformers is heavy and lightning optional: import them only when asked
    if name == "TransformersEvaluator":
        from .transformers_evaluator import TransformersEvaluator

        return TransformersEvaluator
    if name == "LightningEvaluator":
        from .lightning_evaluator import LightningEvaluator

        return LightningEvaluator
    raise AttributeError(name)
