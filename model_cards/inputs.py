"""Plain-data inputs of a model card.

`model_cards` is a leaf package: it never imports `hubcompress`, so a pipeline (or anyone else)
fills these dataclasses from its own results and hands them over.

Example:
    >>> from model_cards.inputs import CardInputs, Metric
    >>> inputs = CardInputs(
    ...     repo_id="me/minilm-small",
    ...     base_model="sentence-transformers/all-MiniLM-L6-v2",
    ...     int8=True,
    ...     student_metrics=[Metric("accuracy", 0.84, "BBC News", "bbcnews", "text-classification")],
    ... )
    >>> inputs.relation
    'quantized'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The relations the Hub's model tree knows; anything else is rejected by its metadata check.
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")

# Keys of one entry of `CardInputs.layers`. `*_total` are optional (unknown widths are left blank).
LAYER_KEYS = ("layer", "heads", "heads_total", "ffn", "ffn_total")


@dataclass(frozen=True)
class Metric:
    """One evaluation number, in the vocabulary of the Hub's `model-index`.

    Args:
        name: metric id, e.g. ``"accuracy"`` or ``"spearmanr"`` (becomes ``metric_type``).
        value: the measured value.
        dataset_name: a pretty dataset name, e.g. ``"BBC News"``.
        dataset_type: the dataset id, e.g. ``"bbcnews"``.
        task_type: the task id, e.g. ``"text-classification"``.
        dataset_split: the split evaluated on, e.g. ``"validation"``.
        task_name: a pretty task name.

    Example:
        >>> Metric("accuracy", 0.91, "BBC News", "bbcnews", "text-classification").name
        'accuracy'
    """

    name: str
    value: float
    dataset_name: str
    dataset_type: str
    task_type: str
    dataset_split: str | None = None
    task_name: str | None = None


@dataclass
class CardInputs:
    """Everything a model card says about one compressed model.

    Args:
        repo_id: where the model is published (used in the how-to-load snippets).
        base_model: hub id of the model it was compressed from.
        int8: whether the published artifacts include int8 weights; decides the relation.
        base_model_relation: overrides the derived relation (one of `BASE_MODEL_RELATIONS`).
        base_model_revision: the commit of the base model that was compressed.
        model_name: name used in `model-index`; defaults to the last part of `repo_id`.
        library_name, pipeline_tag, tags, datasets, license, language: card metadata.
        teacher_metrics, student_metrics, onnx_int8_metrics, openvino_int8_metrics: evaluation results.
        size_bytes_before, size_bytes_after: weight file sizes.
        params_before, params_after: parameter counts.
        layers: one dict per layer with keys `LAYER_KEYS`, e.g.
            ``{"layer": 0, "heads": 8, "heads_total": 12, "ffn": 1024, "ffn_total": 1536}``.
        latencies_ms: label -> median latency in milliseconds, e.g. ``{"teacher (PyTorch)": 9.1}``.
        latencies_by_batch: column -> label -> median ms, e.g. ``{"batch 1": {...}, "batch 8": {...}}``;
            when given, the latency table has one column (and speed-up) per entry instead of ``latencies_ms``.
        cpu_name: the CPU the latencies were measured on.
        latency_setup: how they were measured, e.g. ``"batch 1, 128 tokens, 1 thread"``.
        recipe_yaml: the resolved recipe, as run.
        versions: library -> version used to produce the model.
        onnx_path, onnx_int8_path: paths of the ONNX files inside the repo (None: not published).
        openvino_path, openvino_int8_path: paths of the OpenVINO IR ``.xml`` files inside the repo (each
            with its ``.bin`` beside it; None: not published).
        auto_class: the transformers Auto class that loads the model with its task head.
        trust_remote_code: whether loading with transformers needs the repo's modeling code.
        sentence_transformers: whether the repo is a sentence-transformers model (modules.json).
        pooling: how token vectors become a sentence embedding, e.g. ``{"modes": ["mean"], "normalize": True}``.
        fidelity_texts: the texts the embedding fidelity metrics (``similarity_spearman``,
            ``top10_overlap``) were measured on, e.g. ``{"name": "English dialogue", "rows": 400,
            "top_k": 10, "in_training_texts": 0}``; the card says what they measure.
        verdicts: artifact -> ``{"passed": bool, "checks": {name: {"value", "min" or "max", "passed"}}}``,
            the validation gate's verdict on each published file.
        teacher: how the teacher was made and how it scored against always answering the most frequent
            class, e.g. ``{"source": "finetuned", "accuracy": 0.97, "majority_baseline": 0.23,
            "majority_class": "sport", "dataset": "bbcnews", "split": "validation", "epochs": 1, "steps": 112,
            "lr": 1e-4, "batch_size": 16, "seconds": 300.0}`` (``"source": "checkpoint"``: the base model's own head).
        depth: whole layers dropped, e.g. ``{"layers_before": 6, "dropped": [1, 4], "kept": [0, 2, 3, 5],
            "chosen_by": "block influence", "scores": [...], "method": "..."}``.
        dtype: what the weights are stored, trained and published in, e.g. ``{"stored": "float16",
            "weights": "float32", "autocast": None, "exported": "float32"}``.
        hardware: what the compression trained on, e.g. ``{"cpu": "AMD EPYC 7B13", "gpu": "NVIDIA H100 80GB HBM3",
            "gpus": 8, "processes": 8, "nodes": 1, "backend": "nccl", "global_batch_size": 256}`` (``gpu``
            None on CPUs; ``backend`` None in one process).

    Example:
        >>> CardInputs(repo_id="me/small", base_model="org/base").model_name_or_default
        'small'
    """

    repo_id: str
    base_model: str
    int8: bool = False
    base_model_relation: str | None = None
    base_model_revision: str | None = None
    model_name: str | None = None
    library_name: str | None = None
    pipeline_tag: str | None = None
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    license: str | None = None
    language: str | list[str] | None = None
    teacher_metrics: list[Metric] = field(default_factory=list)
    student_metrics: list[Metric] = field(default_factory=list)
    onnx_int8_metrics: list[Metric] = field(default_factory=list)
    openvino_int8_metrics: list[Metric] = field(default_factory=list)
    size_bytes_before: int | None = None
    size_bytes_after: int | None = None
    params_before: int | None = None
    params_after: int | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    latencies_ms: dict[str, float] = field(default_factory=dict)
    latencies_by_batch: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu_name: str | None = None
    latency_setup: str | None = None
    recipe_yaml: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    onnx_path: str | None = "onnx/model.onnx"
    onnx_int8_path: str | None = None
    openvino_path: str | None = None
    openvino_int8_path: str | None = None
    auto_class: str = "AutoModel"
    trust_remote_code: bool = False
    sentence_transformers: bool = False
    pooling: dict[str, Any] | None = None
    fidelity_texts: dict[str, Any] | None = None
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher: dict[str, Any] | None = None
    dtype: dict[str, str | None] | None = None
    depth: dict[str, Any] | None = None  # layers dropped (model_cards/depth.py); None: none
    hardware: dict[str, Any] | None = None

    @property
    def relation(self) -> str:
        """The `base_model_relation` the card declares.

        Int8 weights put the model under the base model's "Quantizations" on the Hub; a pruned,
        distilled model in float is a "finetune" of it.
        """
        relation = self.base_model_relation or ("quantized" if self.int8 else "finetune")
        if relation not in BASE_MODEL_RELATIONS:
            raise ValueError(
                f"base_model_relation {relation!r} is not one the Hub accepts; "
                f"use one of {', '.join(BASE_MODEL_RELATIONS)}"
            )
        return relation

    @property
    def model_name_or_default(self) -> str:
        """The name used in `model-index` (the repo name when not given)."""
        return self.model_name or self.repo_id.rsplit("/", 1)[-1]


def normalized_layers(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check the per-layer dicts and fill the optional keys with None.

    Raises:
        ValueError: naming the index and key of the first malformed entry.

    Example:
        >>> normalized_layers([{"layer": 0, "heads": 4, "ffn": 512}])
        [{'layer': 0, 'heads': 4, 'heads_total': None, 'ffn': 512, 'ffn_total': None}]
    """
    out = []
    for index, entry in enumerate(layers):
        unknown = sorted(set(entry) - set(LAYER_KEYS))
        if unknown:
            raise ValueError(
                f"layers[{index}]: unknown key {unknown[0]!r}; expected keys {', '.join(LAYER_KEYS)}"
            )
        for key in ("layer", "heads", "ffn"):
            if key not in entry:
                raise ValueError(f"layers[{index}]: missing key {key!r}")
        for key in ("heads", "heads_total", "ffn", "ffn_total"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"layers[{index}]: key {key!r} must be a non-negative int, got {value!r}")
        out.append({key: entry.get(key) for key in LAYER_KEYS})
    return out
