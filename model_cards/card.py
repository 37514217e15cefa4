"""Build a model card (metadata + Markdown body from a Jinja2 template) and write it to a folder.

Example:
    >>> import tempfile
    >>> from model_cards import CardInputs, Metric, write_card
    >>> inputs = CardInputs(
    ...     repo_id="me/minilm-small",
    ...     base_model="sentence-transformers/all-MiniLM-L6-v2",
    ...     teacher_metrics=[Metric("accuracy", 0.86, "BBC News", "bbcnews", "text-classification")],
    ...     student_metrics=[Metric("accuracy", 0.84, "BBC News", "bbcnews", "text-classification")],
    ...     layers=[{"layer": 0, "heads": 8, "heads_total": 12, "ffn": 768, "ffn_total": 1536}],
    ... )
    >>> readme = write_card(inputs, tempfile.mkdtemp())
    >>> readme.name, (readme.parent / "assets" / "layer_widths.png").exists()
    ('README.md', True)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from model_cards._io import write_text_atomic
from model_cards.depth import depth_lines
from model_cards.inputs import CardInputs, Metric, normalized_layers
from model_cards.plots import LAYER_PLOT_NAME, plot_layer_widths
from model_cards.snippets import build_snippets
from model_cards.validate import validate_card

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "model_card.md.j2"
DEFAULT_TAGS = ("hubcompress", "pruned", "distillation")


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


def _eval_results(inputs: CardInputs) -> list[EvalResult]:
    # The teacher's numbers go into model-index too, marked in `metric_name`, so the cost of the
    # compression can be read from the metadata and not only from the rendered table.
    roles = (
        (inputs.student_metrics, "{name}"),
        (inputs.onnx_int8_metrics, "{name} (ONNX int8)"),
        (inputs.openvino_int8_metrics, "{name} (OpenVINO int8)"),
        (inputs.teacher_metrics, "{name} (teacher: " + inputs.base_model + ")"),
    )
    return [
        EvalResult(
            task_type=metric.task_type,
            task_name=metric.task_name,
            dataset_type=metric.dataset_type,
            dataset_name=metric.dataset_name,
            dataset_split=metric.dataset_split,
            metric_type=metric.name,
            metric_value=float(metric.value),
            metric_name=label.format(name=metric.name),
        )
        for metrics, label in roles
        for metric in metrics
    ]


def build_card_data(inputs: CardInputs) -> ModelCardData:
    """The card's YAML metadata: base model and relation, eval results, tags.

    Example:
        >>> build_card_data(CardInputs(repo_id="me/s", base_model="org/b", int8=True)).base_model_relation
        'quantized'
    """
    eval_results = _eval_results(inputs)
    all_metrics = (inputs.student_metrics + inputs.onnx_int8_metrics + inputs.openvino_int8_metrics
                   + inputs.teacher_metrics)
    tags = list(inputs.tags) + list(DEFAULT_TAGS)
    if inputs.int8:
        tags.append("int8")
    if inputs.onnx_path or inputs.onnx_int8_path:
        tags += ["onnx", "transformers.js"]
    if inputs.openvino_path or inputs.openvino_int8_path:
        tags.append("openvino")
    if inputs.trust_remote_code:
        tags.append("custom_code")
    if inputs.sentence_transformers:
        tags += ["sentence-transformers", "sentence-similarity"]
    return ModelCardData(
        base_model=inputs.base_model,
        base_model_relation=inputs.relation,
        library_name=inputs.library_name or ("sentence-transformers" if inputs.sentence_transformers else "transformers"),
        pipeline_tag=inputs.pipeline_tag,
        license=inputs.license,
        language=inputs.language,
        datasets=_unique(inputs.datasets) or None,
        tags=_unique(tags),
        metrics=_unique([metric.name for metric in all_metrics]) or None,
        model_name=inputs.model_name_or_default,
        eval_results=eval_results or None,
    )


def _cell(value: Any) -> str:
    # A "|" inside a cell would split a Markdown table row.
    return str(value).replace("|", "\\|").replace("\n", " ")


def _mib(size: int | None) -> str:
    return "–" if size is None else f"{size / 2**20:.1f} MiB"


def _count(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} M"


def _ratio(before: int | None, after: int | None) -> str:
    return "–" if not before or not after else f"{before / after:.2f}× smaller"


def _summary_rows(inputs: CardInputs) -> list[dict[str, str]]:
    rows = []
    if inputs.size_bytes_before or inputs.size_bytes_after:
        before, after = inputs.size_bytes_before, inputs.size_bytes_after
        rows.append({"what": "weights", "before": _mib(before), "after": _mib(after),
                     "ratio": _ratio(before, after)})
    if inputs.params_before or inputs.params_after:
        before, after = inputs.params_before, inputs.params_after
        rows.append({"what": "parameters", "before": _count(before), "after": _count(after),
                     "ratio": _ratio(before, after)})
    return rows


def _metric_columns(inputs: CardInputs) -> list[tuple[str, str, list[Metric]]]:
    """(role, column title, metrics) of the evaluation table; a runtime's column only when it has numbers."""
    columns = [("teacher", "teacher", inputs.teacher_metrics), ("student", "student (PyTorch)", inputs.student_metrics),
               ("onnx", "ONNX int8", inputs.onnx_int8_metrics)]
    if inputs.openvino_int8_metrics:
        columns.append(("openvino", "OpenVINO int8", inputs.openvino_int8_metrics))
    return columns


def _metric_rows(inputs: CardInputs) -> list[dict[str, Any]]:
    def key(metric: Metric) -> tuple[str, str, str | None]:
        return (metric.name, metric.dataset_type, metric.dataset_split)

    columns = _metric_columns(inputs)
    table: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for role, _, metrics in columns:
        for metric in metrics:
            dataset = metric.dataset_name + (f" ({metric.dataset_split})" if metric.dataset_split else "")
            row = table.setdefault(key(metric), {"metric": metric.name, "dataset": dataset})
            row[role] = float(metric.value)
    rows = []
    for row in table.values():
        teacher, student = row.get("teacher"), row.get("student")
        rows.append({
            "metric": _cell(row["metric"]),
            "dataset": _cell(row["dataset"]),
            "values": ["–" if row.get(role) is None else f"{row[role]:.4f}" for role, _, _ in columns],
            "delta": "–" if teacher is None or student is None else f"{student - teacher:+.4f}",
        })
    return rows


def _latency_table(inputs: CardInputs) -> tuple[list[str], list[list[str]]]:
    """The latency table's header and rows: one ms and speed-up column per batch size (or the one
    ``latencies_ms`` column). Speed-ups are relative to each column's first entry, by convention the
    uncompressed teacher."""
    columns = inputs.latencies_by_batch or ({"latency": inputs.latencies_ms} if inputs.latencies_ms else {})
    single = not inputs.latencies_by_batch
    header = ["model"]
    for title in columns:
        header += ["latency (ms)", "speed-up"] if single else [f"{title} (ms)", f"{title} speed-up"]
    labels = list(dict.fromkeys(label for values in columns.values() for label in values))
    rows = []
    for label in labels:
        row = [_cell(label)]
        for values in columns.values():
            reference, ms = next(iter(values.values()), None), values.get(label)
            row += ["–", "–"] if ms is None else [f"{ms:.2f}", f"{reference / ms:.2f}×" if reference and ms > 0 else "–"]
        rows.append(row)
    return header, rows


def _fidelity_note(inputs: CardInputs) -> str | None:
    """What the embedding fidelity rows measure, and on which texts."""
    texts = inputs.fidelity_texts
    if not texts:
        return None
    k, seen = texts.get("top_k", 10), texts.get("in_training_texts")
    distilled = "" if seen is None else (", none of them distillation text" if seen == 0
                                         else f", {seen} of them also distillation text")
    return (f"`similarity_spearman` and `top{k}_overlap` are measured on {_cell(texts['name'])} ({texts['rows']} "
            f"texts{distilled}): the Spearman correlation of the cosine similarities of every pair of texts with "
            f"those of {inputs.base_model}, and the mean share of each text's {k} nearest neighbours that "
            f"{inputs.base_model} finds too. 1 means a semantic search ranks as with the original.")


def _verdict_rows(inputs: CardInputs) -> list[dict[str, str]]:
    def check(name: str, result: dict[str, Any]) -> str:
        bound = f"≥ {result['min']:g}" if "min" in result else f"≤ {result['max']:g}"
        return f"{name.replace('_', ' ')} {result['value']:.4g} ({bound})"

    return [{"artifact": _cell(artifact), "verdict": "passed" if verdict.get("passed") else "**failed**",
             "checks": _cell("; ".join(check(n, r) for n, r in verdict.get("checks", {}).items()) or "–")}
            for artifact, verdict in inputs.verdicts.items()]


def _teacher_phrase(inputs: CardInputs) -> str:
    finetuned = (inputs.teacher or {}).get("source") == "finetuned"
    return ("a teacher fine-tuned from the original model in the same run" if finetuned
            else "the original model as teacher")


def _made_lines(inputs: CardInputs) -> list[str]:
    """How the teacher was made and what it scored, and the precision, one sentence each."""
    lines = []
    teacher = inputs.teacher
    if teacher:
        if teacher.get("source") == "finetuned":
            epochs = teacher.get("epochs")
            budget = f"{epochs:g} epoch{'' if epochs == 1 else 's'}, " if epochs else ""
            head = f", with a new head ({', '.join(teacher['missing_head'])})" if teacher.get("missing_head") else ""
            how = (f"{inputs.base_model} fine-tuned in this run on the training data ({budget}{teacher.get('steps')} "
                   f"steps, learning rate {teacher.get('lr'):g}, batch size {teacher.get('batch_size')}, "
                   f"{teacher.get('seconds', 0):.0f} s){head}")
        else:
            how = f"{inputs.base_model} as published, with its own head"
        score = ""
        if teacher.get("accuracy") is not None and teacher.get("majority_baseline") is not None:
            score = (f"; accuracy {teacher['accuracy']:.4f} on {teacher.get('dataset')} ({teacher.get('split')}), "
                     f"against {teacher['majority_baseline']:.4f} for always answering the most frequent class "
                     f"({teacher.get('majority_class')!r})")
        lines.append(_cell(f"Teacher: {how}{score}."))
    dtype = inputs.dtype
    if dtype:
        stored = f"the base model stores its weights in {dtype['stored']}; " if dtype.get("stored") else ""
        autocast = f" (with {dtype['autocast']} autocast)" if dtype.get("autocast") else ""
        published = f"; this model's weights are {dtype['exported']}" if dtype.get("exported") else ""
        lines.append(f"Precision: {stored}training and evaluation ran in {dtype.get('weights')}{autocast}{published}.")
    if inputs.hardware:
        lines.append(_cell(f"Hardware: {hardware_phrase(inputs.hardware)}."))
    return lines


def hardware_phrase(hardware: dict[str, Any]) -> str:
    """What the compression trained on, in words.

    Example:
        >>> hardware_phrase({"cpu": "AMD EPYC", "gpu": "NVIDIA H100", "gpus": 8, "processes": 8, "nodes": 1,
        ...                  "backend": "nccl", "global_batch_size": 256})
        'compressed on 8 x NVIDIA H100 (AMD EPYC CPU), 8 processes on 1 machine (torch.distributed, nccl), global batch 256'
        >>> hardware_phrase({"cpu": "AMD EPYC", "gpu": None, "gpus": 0, "processes": 1, "nodes": 1})
        'compressed on the CPU (AMD EPYC), one process'
    """
    gpus = hardware.get("gpus") or 0
    where = (f"{gpus} x {hardware['gpu']} ({hardware.get('cpu') or 'unnamed'} CPU)" if gpus and hardware.get("gpu")
             else f"the CPU ({hardware.get('cpu') or 'unnamed'})")
    processes, nodes = hardware.get("processes") or 1, hardware.get("nodes") or 1
    how = "one process" if processes == 1 else (
        f"{processes} processes on {nodes} machine{'s' if nodes > 1 else ''}"
        + (f" (torch.distributed, {hardware['backend']})" if hardware.get("backend") else ""))
    batch = f", global batch {hardware['global_batch_size']}" if hardware.get("global_batch_size") else ""
    return f"compressed on {where}, {how}{batch}"


def _layer_rows(inputs: CardInputs) -> list[dict[str, str]]:
    def kept(value: int, total: int | None) -> str:
        return f"{value} / {total}" if total is not None else str(value)

    return [
        {"layer": _cell(row["layer"]), "heads": kept(row["heads"], row["heads_total"]),
         "ffn": kept(row["ffn"], row["ffn_total"])}
        for row in normalized_layers(inputs.layers)
    ]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails loudly instead of rendering empty
        autoescape=False,  # Markdown, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def build_card(results: CardInputs, *, plot_paths: Sequence[str] = ()) -> ModelCard:
    """Build the model card of a compressed model.

    Args:
        results: what to say, see `CardInputs`.
        plot_paths: repo-relative paths of images to embed (`write_card` passes the plots it drew).

    Returns:
        A `huggingface_hub.ModelCard` whose metadata names `base_model`, `base_model_relation` and
        the teacher's and student's eval results.

    Example:
        >>> card = build_card(CardInputs(repo_id="me/small", base_model="org/base"))
        >>> card.data.base_model, card.data.base_model_relation
        ('org/base', 'finetune')
    """
    card_data = build_card_data(results)
    relation_phrase = {"quantized": "a quantized derivative", "finetune": "a fine-tuned derivative"}.get(
        results.relation, f"a derivative ({results.relation})"
    )
    context = {
        "card_data": card_data.to_yaml(),
        "model_name": _cell(results.model_name_or_default),
        "base_model": results.base_model,
        "base_model_url": f"https://huggingface.co/{results.base_model}",
        "base_model_revision": results.base_model_revision,
        "relation_phrase": relation_phrase,
        "teacher_phrase": _teacher_phrase(results),
        "made_lines": _made_lines(results),
        "int8": results.int8,
        "summary_rows": _summary_rows(results),
        "metric_rows": _metric_rows(results),
        "metric_header": [title for _, title, _ in _metric_columns(results)],
        "fidelity_note": _fidelity_note(results),
        "latency_header": _latency_table(results)[0],
        "latency_rows": _latency_table(results)[1],
        "verdict_rows": _verdict_rows(results),
        "cpu_name": results.cpu_name,
        "latency_setup": results.latency_setup,
        "layer_rows": _layer_rows(results),
        "depth_lines": depth_lines(results.depth),
        "plot_paths": list(plot_paths),
        "snippets": build_snippets(results),
        "recipe_yaml": results.recipe_yaml.strip(),
        "version_rows": [{"name": _cell(k), "version": _cell(v)} for k, v in sorted(results.versions.items())],
    }
    text = _environment().get_template(TEMPLATE_NAME).render(**context)
    return ModelCard(text)


def write_card(results: CardInputs, out_dir: str | Path) -> Path:
    """Write `README.md` (the card) and its plots under `assets/` into `out_dir`, atomically.

    The card is validated offline first (`model_cards.validate.validate_card`), so a card the Hub
    would reject is never written. Without matplotlib the card is written without its plot.

    Returns:
        The path of the README.md written.

    Example:
        >>> import tempfile
        >>> write_card(CardInputs(repo_id="me/small", base_model="org/base"), tempfile.mkdtemp()).name
        'README.md'
    """
    out = Path(out_dir)
    plot_paths: list[str] = []
    if results.layers:
        try:
            plot_layer_widths(results.layers, out / "assets" / LAYER_PLOT_NAME)
            plot_paths.append(f"assets/{LAYER_PLOT_NAME}")
        except ImportError:
            logger.warning("matplotlib is not installed: writing the card without its layer plot "
                           "(pip install matplotlib to get it)")
    card = build_card(results, plot_paths=plot_paths)
    validate_card(card)
    readme = write_text_atomic(out / "README.md", str(card))
    logger.info("wrote model card %s", readme)
    return readme
