"""Where a model folder keeps its OpenVINO files: the names sentence-transformers gives its own
OpenVINO exports, so a folder reads the same to anyone who knows those.

An OpenVINO model is two files: the graph (``.xml``) and its weights (``.bin``, same name, same
folder; OpenVINO finds it from the ``.xml``). sentence-transformers writes
``openvino/openvino_model.xml`` for the float model and ``openvino/openvino_model_qint8_quantized.xml``
for the one NNCF quantized to int8 with calibration data.

Example:
    >>> import pathlib, tempfile
    >>> from exporters.openvino.file_names import OPENVINO_FP32, OPENVINO_INT8, openvino_files, weights_path
    >>> OPENVINO_FP32, OPENVINO_INT8
    ('openvino/openvino_model.xml', 'openvino/openvino_model_qint8_quantized.xml')
    >>> weights_path(OPENVINO_INT8)
    'openvino/openvino_model_qint8_quantized.bin'
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "openvino").mkdir()
    >>> _ = (folder / OPENVINO_FP32).write_text("<net/>")
    >>> openvino_files(folder)  # an .xml without its .bin is not a model
    []
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

OPENVINO_FP32 = "openvino/openvino_model.xml"
OPENVINO_INT8 = "openvino/openvino_model_qint8_quantized.xml"
OPENVINO_MODELS: tuple[str, ...] = (OPENVINO_FP32, OPENVINO_INT8)


def weights_path(xml_path: str) -> str:
    """The ``.bin`` that holds the weights of the OpenVINO graph ``xml_path``."""
    return str(PurePosixPath(xml_path).with_suffix(".bin"))


# Every OpenVINO file a model folder may hold, relative to it (also usable as hub allow_patterns).
OPENVINO_FILE_PATTERNS: tuple[str, ...] = tuple(
    name for xml in OPENVINO_MODELS for name in (xml, weights_path(xml))
)


def openvino_files(folder: str | os.PathLike[str]) -> list[str]:
    """The files of :data:`OPENVINO_FILE_PATTERNS` in ``folder`` whose model is complete (both the
    ``.xml`` and its ``.bin``), relative to it, in that order."""
    root = Path(folder)
    complete = [xml for xml in OPENVINO_MODELS if (root / xml).is_file() and (root / weights_path(xml)).is_file()]
    return [name for xml in complete for name in (xml, weights_path(xml))]
