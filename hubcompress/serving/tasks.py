"""What the server does per task, in one registry: which folders it recognises as the task, the
task's own output (computed from a graph output: probabilities from logits, a pooled sentence
embedding from token vectors), and the ``/predict`` answer.

Adding a served task is one :func:`register_served_task` call (in this file, or in a module this
package imports).

Example:
    >>> from hubcompress.serving.tasks import SERVED_TASKS, task_of_architecture
    >>> SERVED_TASKS["text-classification"].output, SERVED_TASKS["text-classification"].source
    ('probabilities', 'logits')
    >>> task_of_architecture("BertForSequenceClassification"), task_of_architecture("BertModel")
    ('text-classification', 'feature-extraction')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hubcompress.serving.postprocess import classification_predictions, softmax

if TYPE_CHECKING:
    from hubcompress.serving.runtime import ServedModel
    from hubcompress.serving.text_encoding import EncodedTexts

# (the served model, the feeds, the graph's outputs) -> the task's own output
DeriveFn = Callable[["ServedModel", Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]
# (the served model, the task output of the batch, the encoded texts) -> the /predict answer's rows
PredictFn = Callable[["ServedModel", np.ndarray, "EncodedTexts"], dict[str, Any]]


@dataclass(frozen=True)
class ServedTask:
    """One served task.

    Args:
        name: the task name (hubcompress.json's ``task``, the card's pipeline tag).
        head_suffixes: endings of a config.json ``architectures`` class that mean this task (the
            longest matching ending wins, so ``LMHeadModel`` beats ``Model``).
        output: the name of the task's own output (v2 protocol and Triton).
        source: the graph output it is computed from.
        derive: computes it; ``width`` gives its last dimension from the source's.
        predict: the ``/predict`` answer (besides ``model`` and ``task``).
        pooled: the output pools token vectors as the folder's sentence-transformers modules say.
        labelled: the last axis of the source is the config's classes (Triton's label file).
        modality: what a request carries: ``text`` (tokenized by the folder's tokenizer) or ``image``
            (base64 image files, processed by its image processor).
        per_token: the output has a row per token, ``[batch, sequence, width]`` (else ``[batch, width]``).
        encode_request: (the served model, the ``/predict`` body) -> its feeds, for a task whose inputs
            are not a list of texts (question-answering's question / context pairs); None: texts.
    """

    name: str
    head_suffixes: tuple[str, ...]
    output: str
    source: str
    derive: DeriveFn
    predict: PredictFn
    width: Callable[["ServedModel", int], int] = lambda model, source_width: source_width
    pooled: bool = False
    modality: str = "text"
    labelled: bool = False
    per_token: bool = False
    encode_request: Callable[["ServedModel", Any], "EncodedTexts"] | None = None


SERVED_TASKS: dict[str, ServedTask] = {}


def register_served_task(task: ServedTask) -> ServedTask:
    SERVED_TASKS[task.name] = task
    return task


def task_of_architecture(architecture: str) -> str | None:
    """The served task a config.json ``architectures`` class name stands for (None: none)."""
    matches = [(len(suffix), task.name) for task in SERVED_TASKS.values() for suffix in task.head_suffixes
               if architecture.endswith(suffix)]
    return max(matches)[1] if matches else None


def _classification_answer(model: ServedModel, probabilities: np.ndarray, encoded: EncodedTexts) -> dict[str, Any]:
    rows = classification_predictions(probabilities, model.folder.id2label)
    for row, cut in zip(rows, encoded.truncated):
        row["truncated"] = cut
    return {"predictions": rows}


def _pooled(model: ServedModel, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    hidden = outputs["last_hidden_state"]
    mask = feeds.get("attention_mask", np.ones(hidden.shape[:2], dtype=np.int64))
    return model.pooling(hidden, mask)


register_served_task(ServedTask(
    name="text-classification", head_suffixes=("ForSequenceClassification",), output="probabilities",
    source="logits", derive=lambda model, feeds, outputs: softmax(outputs["logits"]),
    predict=_classification_answer, labelled=True))

register_served_task(ServedTask(
    name="feature-extraction", head_suffixes=("Model",), output="sentence_embedding", source="last_hidden_state",
    derive=_pooled, predict=lambda model, embeddings, encoded: {"embeddings": embeddings.tolist(),
                                                                "truncated": list(encoded.truncated)},
    width=lambda model, source_width: model.pooling.width(source_width), pooled=True))

register_served_task(ServedTask(
    name="image-classification", head_suffixes=("ForImageClassification",), output="probabilities",
    source="logits", derive=lambda model, feeds, outputs: softmax(outputs["logits"]),
    predict=_classification_answer, labelled=True, modality="image"))

# Tasks served from their own modules register on import.
from hubcompress.serving import lm_tasks  # noqa: E402,F401
from hubcompress.serving import token_tasks  # noqa: E402,F401
