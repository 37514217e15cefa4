"""Quantizers with NNI 3.0's names and call shapes; ``compress()`` returns ``(model, calibration_config)``.

Example:
    >>> from hubcompress.compression.quantization import QUANTIZERS
    >>> sorted(QUANTIZERS)
    ['bnn', 'dorefa', 'lsq', 'lsqplus', 'ptq', 'qat']
"""

from __future__ import annotations

from .base import QUANTIZERS, CalibrationConfig, Quantizer, register_quantizer
from .fusion import FUSION_PATTERNS, ROLES, register_fusion_pattern
from .learned import BNNQuantizer, DoReFaQuantizer, LsqPlusQuantizer, LsqQuantizer
from .quantizers import PtqQuantizer, QATQuantizer
from .target_space import (
    QUANT_METHODS,
    SCHEMES,
    QuantDtype,
    QuantizationTargetSpace,
    parse_dtype,
    register_quant_method,
)

__all__ = [
    "FUSION_PATTERNS",
    "QUANTIZERS",
    "QUANT_METHODS",
    "ROLES",
    "SCHEMES",
    "BNNQuantizer",
    "CalibrationConfig",
    "DoReFaQuantizer",
    "LsqPlusQuantizer",
    "LsqQuantizer",
    "PtqQuantizer",
    "QATQuantizer",
    "QuantDtype",
    "QuantizationTargetSpace",
    "Quantizer",
    "parse_dtype",
    "register_fusion_pattern",
    "register_quant_method",
    "register_quantizer",
]
