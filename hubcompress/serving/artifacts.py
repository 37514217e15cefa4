"""The model files an output folder may hold, each with the runtime that runs it: one table, read
by the server (which file to serve), the validate stage (which files to measure and judge) and the
card, so adding a runtime is one row here and one backend in :mod:`hubcompress.serving.backends`.

The names are report.json's (``quality``, ``latency_ms``, ``gate.verdicts``), so the server can pick
the fastest file whose verdict passed without a second vocabulary.

Example:
    >>> from hubcompress.serving.artifacts import ARTIFACTS
    >>> [(a.name, a.runtime, a.int8) for a in ARTIFACTS.values()]  # doctest: +NORMALIZE_WHITESPACE
    [('onnx_fp32', 'onnxruntime', False), ('onnx_int8', 'onnxruntime', True),
     ('openvino_fp32', 'openvino', False), ('openvino_int8', 'openvino', True)]
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters.onnx.file_names import ONNX_FP32, ONNX_INT8
from exporters.openvino.file_names import OPENVINO_FP32, OPENVINO_INT8, weights_path
from hubcompress.errors import ServingError

logger = logging.getLogger(__name__)

# Runtime name -> the Python package it needs (what `serve --backend` accepts).
RUNTIMES: dict[str, str] = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
# The latency the default choice compares: the server batches concurrent requests, so batch 8.
CHOICE_LATENCY = "batch8"


@dataclass(frozen=True)
class Artifact:
    """One model file of a folder: report.json's name for it, its runtime, its precision, its path."""

    name: str
    runtime: str
    int8: bool
    path: str  # relative to the folder
    label: str  # how the card and logs name it

    def files(self) -> tuple[str, ...]:
        """Every file the artifact needs (an OpenVINO model is an ``.xml`` and its ``.bin``)."""
        return (self.path, weights_path(self.path)) if self.runtime == "openvino" else (self.path,)

    def present(self, folder: Path) -> bool:
        return all((Path(folder) / name).is_file() for name in self.files())


ARTIFACTS: dict[str, Artifact] = {a.name: a for a in (
    Artifact("onnx_fp32", "onnxruntime", False, ONNX_FP32, "ONNX Runtime fp32"),
    Artifact("onnx_int8", "onnxruntime", True, ONNX_INT8, "ONNX Runtime int8"),
    Artifact("openvino_fp32", "openvino", False, OPENVINO_FP32, "OpenVINO fp32"),
    Artifact("openvino_int8", "openvino", True, OPENVINO_INT8, "OpenVINO int8"),
)}


def artifacts_in(folder: str | Path) -> list[Artifact]:
    """The artifacts whose files are all in ``folder``, in :data:`ARTIFACTS` order."""
    return [artifact for artifact in ARTIFACTS.values() if artifact.present(Path(folder))]


def runtime_installed(runtime: str) -> bool:
    """Whether the runtime's package can be imported (it is not imported)."""
    return importlib.util.find_spec(RUNTIMES[runtime]) is not None


@dataclass(frozen=True)
class Choice:
    """The artifact to serve and, in words, why (the server logs it at start-up)."""

    artifact: Artifact
    reason: str


def choose_artifact(folder: str | Path, *, runtime: str | None = None, int8: bool | None = None,
                    installed: Callable[[str], bool] = runtime_installed) -> Choice:
    """Which file of ``folder`` to serve.

    ``runtime`` and ``int8`` narrow the candidates when given (``None``: either). Among the
    candidates present, the fastest at batch 8 whose verdict in report.json passed is chosen;
    without such a report (a folder not written by a run, a run without validation) the first
    present of ONNX Runtime fp32, ONNX Runtime int8, OpenVINO fp32, OpenVINO int8. A runtime not
    installed is only left out when it was not asked for (asked for, it is an error).

    Raises:
        ServingError: ``runtime`` is unknown or not installed, or no candidate file is present.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> (folder / "onnx").mkdir()
        >>> for name in ("model.onnx", "model_quantized.onnx"):
        ...     _ = (folder / "onnx" / name).write_bytes(b"")
        >>> choose_artifact(folder).artifact.name  # no report.json: the fp32 file, as always
        'onnx_fp32'
        >>> report = {"latency_ms": {"batch8": {"onnx_fp32": 20.0, "onnx_int8": 9.0}},
        ...           "gate": {"verdicts": {"onnx_fp32": {"passed": True}, "onnx_int8": {"passed": True}}}}
        >>> _ = (folder / "report.json").write_text(json.dumps(report))
        >>> choice = choose_artifact(folder)
        >>> choice.artifact.name, choice.reason
        ('onnx_int8', 'the fastest validated file in report.json (9 ms at batch 8; onnx_fp32 20 ms)')
        >>> choose_artifact(folder, int8=False).artifact.name
        'onnx_fp32'
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ServingError(f"unknown backend {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime is not None and not installed(runtime):
        raise ServingError(f"--backend {runtime} needs the {RUNTIMES[runtime]!r} package: "
                           + ("pip install 'hubcompress[openvino]'" if runtime == "openvino"
                              else "pip install 'hubcompress[serve]'"))
    folder = Path(folder)
    wanted = [a for a in ARTIFACTS.values() if runtime in (None, a.runtime) and int8 in (None, a.int8)]
    present = [a for a in wanted if a.present(folder)]
    usable = [a for a in present if runtime is not None or installed(a.runtime)]
    if not usable:
        raise ServingError(_nothing_to_serve(folder, wanted, present))
    latency, verdicts = _report(folder)
    measured = {a.name: latency[a.name] for a in usable
                if isinstance(latency.get(a.name), (int, float)) and verdicts.get(a.name, {}).get("passed")}
    if measured:
        best = min(measured, key=measured.__getitem__)
        others = "; ".join(f"{name} {ms:g} ms" for name, ms in sorted(measured.items(), key=lambda kv: kv[1])
                           if name != best)
        reason = f"the fastest validated file in report.json ({measured[best]:g} ms at batch 8{'; ' + others if others else ''})"
        return Choice(ARTIFACTS[best], reason)
    return Choice(usable[0], "report.json has no latency of a validated candidate; the first file present of "
                  + ", ".join(a.name for a in wanted))


def _report(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    path = folder / "report.json"
    if not path.is_file():
        return {}, {}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("cannot read %s (%s); choosing the file to serve without it", path, err)
        return {}, {}
    latency = ((report.get("latency_ms") or {}).get(CHOICE_LATENCY)) or {}
    verdicts = ((report.get("gate") or {}).get("verdicts")) or {}
    return latency, verdicts


def _nothing_to_serve(folder: Path, wanted: Iterable[Artifact], present: list[Artifact]) -> str:
    wanted = list(wanted)
    if present:
        missing = sorted({RUNTIMES[a.runtime] for a in present})
        return (f"{folder}: the files that fit ({', '.join(a.path for a in present)}) need {', '.join(missing)}, "
                "which is not installed: pip install 'hubcompress[serve]' (ONNX Runtime) or "
                "'hubcompress[openvino]'")
    others = [a.path for a in artifacts_in(folder)]
    hint = f"; it has {', '.join(others)}: drop --int8/--fp32/--backend or pick those" if others else (
        f": serve a folder written by `hubcompress run`, or export the model with exporters.onnx.export_onnx to "
        f"<folder>/{ONNX_FP32}")
    return f"{', '.join(str(folder / a.path) for a in wanted)} does not exist{hint}"
