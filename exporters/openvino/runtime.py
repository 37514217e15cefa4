"""How an OpenVINO model is loaded and compiled for the CPU, in one place, so the export's check,
the pipeline's metrics and the server run exactly the same numbers.

OpenVINO's CPU plugin computes in bfloat16 by default on CPUs with native bf16 (AVX512-BF16, AMX):
on such a CPU the fp32 IR of a MiniLM differed from ONNX Runtime by 1e-2 with the default, by 2e-6
with ``INFERENCE_PRECISION_HINT: f32``. A file we call fp32 must compute fp32, and an int8 file must
be judged as it will be run, so every compile here asks for f32 (the int8 layers stay int8; on a
2-core AMD EPYC the int8 model was as fast with f32 as with bf16 for the layers left in float).

Example:
    >>> from exporters.openvino.runtime import RUNTIME_CONFIG
    >>> RUNTIME_CONFIG
    {'INFERENCE_PRECISION_HINT': 'f32'}
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from exporters.errors import OpenVINOLoadFailed, OpenVINONotInstalled

RUNTIME_CONFIG: dict[str, str] = {"INFERENCE_PRECISION_HINT": "f32"}
DEVICE = "CPU"


def openvino_available(*, int8: bool = False) -> bool:
    """Whether ``openvino`` (and, with ``int8``, ``nncf``) can be imported; imports neither.

    Example:
        >>> isinstance(openvino_available(), bool)
        True
    """
    packages = ("openvino", "nncf") if int8 else ("openvino",)
    return all(importlib.util.find_spec(name) is not None for name in packages)


def require_openvino(*, int8: bool = False) -> None:
    """Raise :class:`~exporters.errors.OpenVINONotInstalled` unless :func:`openvino_available`."""
    for package in ("openvino", "nncf") if int8 else ("openvino",):
        if importlib.util.find_spec(package) is None:
            raise OpenVINONotInstalled(package)


def compile_config(threads: int | None = None, *, latency: bool = True) -> dict[str, Any]:
    """The CPU plugin's properties: :data:`RUNTIME_CONFIG`, plus a thread count, and one stream
    (``PERFORMANCE_HINT: LATENCY``) since callers make one call at a time and want it fast.

    Example:
        >>> compile_config(2)
        {'INFERENCE_PRECISION_HINT': 'f32', 'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_NUM_THREADS': 2}
    """
    config: dict[str, Any] = dict(RUNTIME_CONFIG)
    if latency:
        config["PERFORMANCE_HINT"] = "LATENCY"
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def compile_openvino(path: str | os.PathLike[str], threads: int | None = None, *, latency: bool = True) -> Any:
    """Read and compile the IR at ``path`` (its ``.bin`` next to it) for the CPU with :func:`compile_config`.

    Raises:
        OpenVINONotInstalled: openvino is missing.
        OpenVINOLoadFailed: the files cannot be read or compiled.
    """
    require_openvino()
    import openvino as ov

    try:
        return ov.Core().compile_model(os.fspath(path), DEVICE, compile_config(threads, latency=latency))
    except Exception as err:  # OpenVINO raises RuntimeError for every kind of load failure
        raise OpenVINOLoadFailed(os.fspath(path), error_text(err)) from err


def error_text(err: BaseException) -> str:
    """An OpenVINO exception on one line: its messages start with the C++ source location, which
    says nothing to the user, and put the reason on the lines after it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("Exception from")]
    return f"{type(err).__name__}: {' '.join(lines)[:800] or 'no message'}"
