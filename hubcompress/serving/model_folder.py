"""Find what the server needs in an output folder: the model file, the task, the labels, the limits.

The folder is the pipeline's checkpoint contract (``config.json``, tokenizer files,
``onnx/model.onnx``, ``onnx/model_quantized.onnx``, maybe ``openvino/*.xml``, optionally
``hubcompress.json`` and sentence-transformers' ``modules.json``); a hub repo id is downloaded
through :func:`hubcompress.hub.resolve_model_source` first. Which model file is served is
:func:`hubcompress.serving.artifacts.choose_artifact`'s decision.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubcompress.errors import ServingError
from hubcompress.serving.artifacts import Artifact, choose_artifact
from hubcompress.serving.tasks import SERVED_TASKS, task_of_architecture

logger = logging.getLogger(__name__)


# Tokenizers that set no limit report a huge model_max_length (int(1e30)); anything above this is "unset".
_UNSET_LENGTH = 1_000_000


@dataclass(frozen=True)
class ModelFolder:
    """A resolved model folder, the model file chosen to serve (and why), and what was read from it."""

    path: Path
    model_path: Path
    name: str
    task: str
    config: dict[str, Any] = field(repr=False)
    artifact: Artifact | None = None
    reason: str = ""  # why this file: the server's start-up log says it

    @property
    def onnx_path(self) -> Path:
        """The served model file (its old name, from when every served file was an ONNX file)."""
        return self.model_path

    @property
    def runtime(self) -> str:
        """The runtime that runs :attr:`model_path` (a key of :data:`hubcompress.serving.backends.BACKENDS`)."""
        return self.artifact.runtime if self.artifact is not None else "onnxruntime"

    @property
    def id2label(self) -> dict[int, str]:
        """Class index -> label name, from config.json (``LABEL_i`` where the config has none)."""
        raw = self.config.get("id2label") or {}
        labels = {int(index): str(label) for index, label in raw.items()}
        count = max(len(labels), int(self.config.get("num_labels", 0) or 0))
        return {index: labels.get(index, f"LABEL_{index}") for index in range(count)}

    def token_limit(self, tokenizer_max_length: int | None) -> int:
        """The longest token sequence the model takes: sentence-transformers' ``max_seq_length`` when
        present (what it was trained with), else the tokenizer's limit, never above the position
        embeddings."""
        positions = int(self.config.get("max_position_embeddings") or 512)
        candidates = [positions]
        st_config = _read_json(self.path / "sentence_bert_config.json")
        if st_config.get("max_seq_length"):
            candidates.append(int(st_config["max_seq_length"]))
        elif tokenizer_max_length and tokenizer_max_length < _UNSET_LENGTH:
            candidates.append(int(tokenizer_max_length))
        return min(candidates)


def open_model_folder(
    source: str | Path, *, int8: bool | None = False, backend: str | None = None, name: str | None = None,
    need_task: bool = True,
) -> ModelFolder:
    """Resolve ``source`` (a folder or a hub repo id) and read what serving needs from it.

    ``backend`` (``onnxruntime`` / ``openvino``) and ``int8`` narrow the model files to serve,
    ``None`` leaving either open; of what is left, :func:`~hubcompress.serving.artifacts.choose_artifact`
    takes the fastest that report.json says passed its checks (else the first present).

    ``need_task=False`` (Triton export, which runs any graph) leaves ``task`` empty when the folder
    does not say which task it is for, instead of raising.

    Raises:
        ServingError: no model file fits, or the task cannot be told from the folder.
        HubError: ``source`` is neither a folder nor a repo id that can be fetched.

    Example:
        >>> import json, pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "tiny-classifier"
        >>> (folder / "onnx").mkdir(parents=True)
        >>> (folder / "onnx" / "model.onnx").write_bytes(b"")
        0
        >>> _ = (folder / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
        >>> found = open_model_folder(folder)
        >>> found.name, found.task, found.model_path.name, found.runtime
        ('tiny-classifier', 'text-classification', 'model.onnx', 'onnxruntime')
    """
    from hubcompress.hub import resolve_model_source  # late: pulls in huggingface_hub

    path = resolve_model_source(source)
    choice = choose_artifact(path, runtime=backend, int8=int8)
    config = _read_json(path / "config.json")
    manifest = _read_json(path / "hubcompress.json")
    try:
        task = detect_task(config, manifest, where=path)
    except ServingError:
        if need_task:
            raise
        task = ""
    default_name = Path(source).name if Path(source).is_dir() else str(source).rstrip("/").rsplit("/", 1)[-1]
    return ModelFolder(path, path / choice.artifact.path, sanitize_model_name(name or default_name), task, config,
                       choice.artifact, choice.reason)


def detect_task(config: dict[str, Any], manifest: dict[str, Any] | None = None, *, where: object = "") -> str:
    """The task to serve: ``hubcompress.json``'s ``task`` key, else the head named in ``architectures``.

    Example:
        >>> detect_task({"architectures": ["BertModel"]})
        'feature-extraction'
        >>> detect_task({"architectures": ["BertModel"]}, {"task": "text-classification"})
        'text-classification'
    """
    task = (manifest or {}).get("task")
    if task is None:
        for architecture in config.get("architectures") or []:
            task = task_of_architecture(str(architecture))
            if task is not None:
                break
    if task not in SERVED_TASKS:
        found = f"task {task!r}" if task else f"architectures {config.get('architectures')!r}"
        raise ServingError(
            f"{where}: cannot serve {found}; the server handles {list(SERVED_TASKS)}. Set "
            '"task" in hubcompress.json (e.g. {"task": "feature-extraction"}) if the folder holds one of them.'
        )
    return task


def sanitize_model_name(name: str) -> str:
    """A model name usable in URLs and as a Triton model directory.

    Example:
        >>> sanitize_model_name("MiniLM L6 (pruned)")
        'MiniLM-L6-pruned'
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    if not cleaned:
        raise ServingError(f"{name!r} leaves no usable model name; pass one with --model-name")
    return cleaned


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ServingError(f"cannot read {path}: {err}; fix or remove the file") from err
    if not isinstance(data, dict):
        raise ServingError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data
