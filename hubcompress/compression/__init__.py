"""Compression: NNI 3.0-style config lists, shared module wrappers, pruners, quantizers,
distillers and evaluators; fused compressors share one training run (``from_compressor``).

Example:
    >>> from hubcompress.compression import L1NormPruner, QATQuantizer, TorchEvaluator  # NNI names
"""

from __future__ import annotations

from .config import DistillationSetting, HubcompressDeprecationWarning, PruningSetting, QuantizationSetting
from .distillation import Adaptive1dLayerwiseDistiller, Distiller, DynamicLayerwiseDistiller
from .evaluator import Evaluator, TorchEvaluator
from .pruning import (
    AGPPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LevelPruner,
    LinearPruner,
    MovementPruner,
    SlimPruner,
    TaylorPruner,
    sparsity_report,
    transformer_config_list,
)
from .quantization import (
    BNNQuantizer,
    DoReFaQuantizer,
    LsqPlusQuantizer,
    LsqQuantizer,
    PtqQuantizer,
    QATQuantizer,
    Quantizer,
)
from .utils import trace

__all__ = [
    "AGPPruner",
    "Adaptive1dLayerwiseDistiller",
    "BNNQuantizer",
    "DistillationSetting",
    "Distiller",
    "DoReFaQuantizer",
    "DynamicLayerwiseDistiller",
    "Evaluator",
    "FPGMPruner",
    "HubcompressDeprecationWarning",
    "L1NormPruner",
    "L2NormPruner",
    "LevelPruner",
    "LightningEvaluator",
    "LinearPruner",
    "LsqPlusQuantizer",
    "LsqQuantizer",
    "MovementPruner",
    "PruningSetting",
    "PtqQuantizer",
    "QATQuantizer",
    "QuantizationSetting",
    "Quantizer",
    "SlimPruner",
    "TaylorPruner",
    "TorchEvaluator",
    "TransformersEvaluator",
    "sparsity_report",
    "trace",
    "transformer_config_list",
]


def __getattr__(name: str):  # optional or heavy dependencies: import on demand
    if name in ("TransformersEvaluator", "LightningEvaluator"):
        from . import evaluator

        return getattr(evaluator, name)
    raise AttributeError(name)
