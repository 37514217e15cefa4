"""Evaluators: how compressors hook into a training loop they do not own."""

from __future__ import annotations

from .base import Evaluator
from .torch_evaluator import TorchEvaluator

__all__ = ["Evaluator", "TorchEvaluator", "TransformersEvaluator"]


def __getattr__(name: str):  # transformers is heavy: import it only when asked
    if name == "TransformersEvaluator":
        from .transformers_evaluator import TransformersEvaluator

        return TransformersEvaluator
    raise AttributeError(name)
