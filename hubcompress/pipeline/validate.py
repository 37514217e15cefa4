"""Stage 4: the student against the teacher on the recipe's eval split, in PyTorch and in every
exported file the folder holds (ONNX Runtime fp32 and int8, OpenVINO fp32 and int8: the table
:data:`hubcompress.serving.artifacts.ARTIFACTS`, each run by its backend), plus latencies, and the
gate that decides whether the run may be pushed.

Quality per task: classification gets accuracy, macro F1 and agreement with the teacher;
embeddings get the cosine to the teacher's embeddings and, when the data has labels, an
MTEB-style probe (logistic regression fitted on the train split's embeddings of each model), and
on texts that are not the distillation data (``validation.fidelity_texts``, default the built-in
``dialogue`` set) what a similarity search sees: the Spearman correlation of all pairwise cosine
similarities with the teacher's, and the overlap of each text's 10 nearest neighbours.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..pooling import Pooling
from ..serving.artifacts import ARTIFACTS, Artifact, artifacts_in, runtime_installed
from ..serving.backends import Backend, open_backend
from . import metrics
from .batches import Encoded
from .context import RunContext
from .export_stage import FP32
from .tasks import Rows, TaskSpec, flat
from .tasks.feature_extraction import TOP_K

logger = logging.getLogger(__name__)

EVAL_BATCH = 32
LATENCY_BATCHES = (1, 8)
LATENCY_SEQ = 128
LATENCY_RUNS = 5     # timed calls per artifact and round
LATENCY_ROUNDS = 3


def _numpy(value: Any) -> np.ndarray:
    return value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def torch_rows(model: torch.nn.Module, data: Encoded, task: TaskSpec, *, desc: str, progress: bool,
               device: torch.device | str = "cpu", pooling: Pooling | None = None) -> Rows:
    """One output row per example (pooled embedding, logits, ...: the task's ``rows``), in the data's order."""
    model.eval().to(device)
    out: list[tuple[list[int], list[np.ndarray]]] = []
    with torch.no_grad():
        for index, batch in tqdm(list(data.eval_batches(EVAL_BATCH)), desc=desc, unit="batch", disable=not progress):
            result = model(**{k: v.to(device) for k, v in batch.items()})
            values = {name: _numpy(result[name]) for name in task.outputs}
            out.append((index, task.rows(values, {k: v.numpy() for k, v in batch.items()}, index, data, pooling)))
    model.cpu()
    return _in_order(out, len(data))


def exported(ctx: RunContext) -> dict[str, Artifact]:
    """The exported files in the output folder whose runtime is installed, by report.json name."""
    found = {}
    for artifact in artifacts_in(ctx.output):
        if runtime_installed(artifact.runtime):
            found[artifact.name] = artifact
        else:
            logger.warning("%s is not measured: its runtime %s is not installed", artifact.path, artifact.runtime)
    return found


def _backend(ctx: RunContext, artifact: Artifact) -> Backend:
    # Spinning threads are the runtimes' default, and faster for one caller at a time.
    return open_backend(artifact.runtime, ctx.output / artifact.path, spinning=True)


def backend_rows(backend: Backend, data: Encoded, task: TaskSpec, *, desc: str, progress: bool,
                 pooling: Pooling | None = None) -> Rows:
    """One output row per example from an exported file (the task's ``rows``), in the data's order."""
    names = {spec.name for spec in backend.signature.inputs}
    out = []
    for index, batch in tqdm(list(data.eval_batches(EVAL_BATCH)), desc=desc, unit="batch", disable=not progress):
        feeds = {k: v.numpy() for k, v in batch.items() if k in names}
        values = backend.run(feeds)
        out.append((index, task.rows(values, {k: v.numpy() for k, v in batch.items()}, index, data, pooling)))
    return _in_order(out, len(data))


def onnx_rows(path: Any, data: Encoded, task: TaskSpec, *, desc: str, progress: bool,
              pooling: Pooling | None = None) -> np.ndarray:
    """:func:`backend_rows` of the ONNX file at ``path`` in ONNX Runtime."""
    return backend_rows(open_backend("onnxruntime", path, spinning=True), data, task, desc=desc, progress=progress,
                        pooling=pooling)


def _in_order(parts: list[tuple[list[int], list[np.ndarray]]], n: int) -> Rows:
    # Fixed-shape rows come back as one array (n, ...); rows of their own lengths as a list.
    rows: list[Any] = [None] * n
    for index, values in parts:
        for i, value in zip(index, values):
            rows[i] = np.asarray(value, dtype=np.float32)
    return np.stack(rows) if rows and len({r.shape for r in rows}) == 1 else rows


def _splits(ctx: RunContext) -> dict[str, Encoded]:
    splits = {"eval": ctx.encoded("eval")}
    if ctx.task.pooled and ctx.data.eval.labels is not None and ctx.data.train is not None:
        splits["train"] = ctx.encoded("train")  # the probe fits on it
    if ctx.fidelity_texts is not None:
        splits["fidelity"] = ctx.encoded("fidelity")
    return splits


def fidelity_set(ctx: RunContext) -> dict[str, Any] | None:
    """How report.json and the card name the fidelity texts; ``in_training_texts`` counts those the
    student was also distilled on (0 unless the recipe names the same texts for both)."""
    texts = ctx.fidelity_texts
    if texts is None:
        return None
    trained = ctx.distill_texts.texts if ctx.distill_texts is not None else \
        (ctx.data.train.texts if ctx.data.train is not None else [])
    return {"id": texts.id, "name": texts.name, "rows": len(texts), "top_k": TOP_K,
            "in_training_texts": len(set(texts.texts) & set(trained))}


def _latencies_ms(runners: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Median ms per call of each runner over ``LATENCY_ROUNDS`` rounds in which the runners take turns,
    a block of ``LATENCY_RUNS`` calls each: a one-off stall, or the machine's load drifting, then hits
    every artifact alike instead of one artifact's whole sample (one block each read an OpenVINO file
    at 5.0 ms that runs at 2.5 ms)."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(LATENCY_ROUNDS):
        for name, run in runners.items():
            # torch's and ONNX Runtime's worker threads spin for a while after a call; let the last
            # runner's go quiet so they do not steal this one's cores.
            time.sleep(0.2)
            run()
            for _ in range(LATENCY_RUNS):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: round(1000 * statistics.median(values), 2) for name, values in times.items()}


def measure_latencies(ctx: RunContext, teacher: torch.nn.Module, student: torch.nn.Module) -> dict[str, Any]:
    """Median ms per batch on this CPU, text padded to 128 tokens (or the model's limit), per artifact."""
    seq = min(LATENCY_SEQ, getattr(student.config, "max_position_embeddings", LATENCY_SEQ))
    # Images come at the processor's fixed size: no sequence length to state.
    out: dict[str, Any] = {"sequence_length": seq} if ctx.task.modality == "text" else {}
    backends = {name: _backend(ctx, artifact) for name, artifact in exported(ctx).items()}
    for size in LATENCY_BATCHES:
        batch = ctx.task.latency_inputs(ctx, size, seq)
        runners: dict[str, Callable[[], Any]] = {
            name: (lambda m=model, b=batch: m(**b)) for name, model in (("teacher", teacher), ("student", student))}
        for name, backend in backends.items():
            wanted = {spec.name for spec in backend.signature.inputs}
            feeds = {k: v.numpy() for k, v in batch.items() if k in wanted}
            runners[name] = lambda b=backend, f=feeds: b.run(f)
        with torch.no_grad():
            out[f"batch{size}"] = _latencies_ms(runners)
    return out


def _check(value: float, key: str, bound: float, *, at_least: bool) -> dict[str, Any]:
    return {"value": float(f"{value:.5g}"), "min" if at_least else "max": bound, "key": f"validation.{key}",
            "passed": value >= bound if at_least else value <= bound}


def _fp32_parity(ctx: RunContext, parity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    row = ctx.task.row_name
    if row not in parity:
        return {}
    return {"max_abs_diff_to_pytorch": _check(parity[row]["max_abs_diff"], "max_abs_diff_onnx",
                                              ctx.recipe.validation.max_abs_diff_onnx, at_least=False)}


def _int8_agreement(ctx: RunContext, parity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    agreement = parity.get("argmax_agreement", parity.get("cosine", {}).get("mean"))
    if agreement is None:
        return {}
    return {"agreement_with_fp32_student": _check(agreement, "min_int8_agreement",
                                                  ctx.recipe.validation.min_int8_agreement, at_least=True)}


# How an exported file is held to the PyTorch student, by its precision (Artifact.int8), whatever its runtime.
PARITY_CHECKS: dict[bool, Callable[[RunContext, dict[str, Any]], dict[str, dict[str, Any]]]] = {
    False: _fp32_parity, True: _int8_agreement}


# (check name, validation key of its lower bound, how to read it from an artifact's quality row)
FIDELITY_GATES: tuple[tuple[str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("cosine_to_teacher", "min_cosine", lambda values: values.get("cosine_to_teacher", {}).get("mean")),
    ("similarity_spearman", "min_similarity_spearman", lambda values: values.get("similarity_spearman")),
    (f"top{TOP_K}_overlap", "min_topk_overlap", lambda values: values.get(f"top{TOP_K}_overlap")),
)


def verdicts(ctx: RunContext, quality: dict[str, dict[str, Any]],
             parity: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One verdict per artifact (student, onnx_fp32, onnx_int8, openvino_fp32, openvino_int8): each
    check's value, bound and result.

    Every artifact meets the task-metric and fidelity bounds against the teacher; an fp32 file (ONNX
    or OpenVINO) must also compute the PyTorch student's numbers (``max_abs_diff_onnx``), and an int8
    file must agree with the fp32 student (argmax agreement for logits, mean cosine for embeddings,
    ``min_int8_agreement``): an absolute tolerance means nothing for int8.
    """
    rules = ctx.recipe.validation
    primary = ctx.task.primary_metric
    teacher = quality["teacher"].get(primary)
    out: dict[str, dict[str, Any]] = {}
    for name, values in quality.items():
        if name == "teacher":
            continue
        checks: dict[str, dict[str, Any]] = {}
        if rules.max_metric_drop is not None and teacher is not None and values.get(primary) is not None:
            checks[f"{primary}_drop_points"] = _check(100 * (teacher - values[primary]), "max_metric_drop",
                                                      rules.max_metric_drop, at_least=False)
        for check, key, read in FIDELITY_GATES:
            value = read(values)
            if getattr(rules, key) is not None and value is not None:
                checks[check] = _check(value, key, getattr(rules, key), at_least=True)
        if name in ARTIFACTS and name in parity:
            checks.update(PARITY_CHECKS[ARTIFACTS[name].int8](ctx, parity[name]))
        out[name] = {"passed": all(c["passed"] for c in checks.values()), "checks": checks}
    return out


def _reason(name: str, check: str, result: dict[str, Any]) -> str:
    side = f"< {result['key']} {result['min']}" if "min" in result else f"> {result['key']} {result['max']}"
    return f"{name}: {check.replace('_', ' ')} {result['value']:g} {side}"


def gate(ctx: RunContext, quality: dict[str, dict[str, Any]], parity: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether the run may be published (every artifact's verdict passed); every reason it may not."""
    found = verdicts(ctx, quality, parity)
    reasons = [_reason(name, check, result) for name, verdict in found.items()
               for check, result in verdict["checks"].items() if not result["passed"]]
    primary = ctx.task.primary_metric
    if ctx.recipe.validation.max_metric_drop is not None and quality["teacher"].get(primary) is None:
        reasons.append(f"validation.max_metric_drop is set but {primary} could not be measured (the data has no labels)")
    return {"passed": not reasons, "reasons": reasons, "verdicts": found}


CONSUMER_TEXTS = 16  # eval texts (or images) the consumer check runs through every loader


def check_consumers(ctx: RunContext) -> dict[str, Any] | None:
    """Load the folder with transformers, sentence-transformers and ONNX Runtime in a process without
    hubcompress, and compare each with the exported ONNX model (None: nothing exported to compare)."""
    from .consumer_check import run_consumer_check

    if not (ctx.output / FP32).exists() or not ctx.task.consumer_check:
        return None
    samples = ({"images": list(ctx.data.eval.images[:CONSUMER_TEXTS])} if ctx.task.modality == "image"
               else {"texts": list(ctx.data.eval.texts[:CONSUMER_TEXTS])})
    return run_consumer_check(ctx.output, auto_class=ctx.task.auto_class, output=ctx.task.onnx_output, **samples,
                              atol=ctx.recipe.validation.max_abs_diff_onnx, max_length=ctx.recipe.data.max_length)


def run_validate(ctx: RunContext) -> dict[str, Any]:
    task, progress = ctx.task, ctx.progress
    teacher, student = ctx.teacher, ctx.student()
    splits = _splits(ctx)
    outputs: dict[str, dict[str, np.ndarray]] = {"teacher": {}, "student": {}}
    backends = {name: _backend(ctx, artifact) for name, artifact in exported(ctx).items()}
    for split, data in splits.items():
        outputs["teacher"][split] = torch_rows(teacher, data, task, desc=f"teacher, {split}", progress=progress,
                                               device=ctx.device, pooling=ctx.pooling)
        outputs["student"][split] = torch_rows(student, data, task, desc=f"student, {split}", progress=progress,
                                               device=ctx.device, pooling=ctx.pooling)
        for name, backend in backends.items():
            outputs.setdefault(name, {})[split] = backend_rows(backend, data, task, desc=f"{name}, {split}",
                                                               progress=progress, pooling=ctx.pooling)
    quality = {name: task.quality(rows, outputs["teacher"], ctx) for name, rows in outputs.items()}
    for key in task.against_teacher:
        quality["teacher"].pop(key, None)
    row = task.row_name
    compare = {"argmax_output" if task.agreement == "argmax" else "cosine_output": row}
    parity = {name: task.parity(outputs["student"]["eval"], outputs[name]["eval"], row) if task.parity else
              metrics.parity({row: flat(outputs["student"]["eval"])}, {row: flat(outputs[name]["eval"])}, **compare)
              for name in backends}
    del backends  # each holds a model and its thread pool; the latencies open their own
    result = {"eval": {"dataset": ctx.data.dataset_id, "split": ctx.recipe.data.eval_split, "rows": len(ctx.data.eval),
                       **({"fidelity": fidelity_set(ctx)} if ctx.fidelity_texts is not None else {})},
              "quality": quality, "parity_to_pytorch_student": parity,
              "latency_ms": measure_latencies(ctx, teacher, student)}
    result["gate"] = gate(ctx, quality, parity)
    result["consumers"] = check_consumers(ctx)
    if result["consumers"] is not None:
        result["gate"]["reasons"] += [f"consumers: {reason}" for reason in result["consumers"]["reasons"]]
        result["gate"]["passed"] = not result["gate"]["reasons"]
    for reason in result["gate"]["reasons"]:
        logger.warning("gate: %s", reason)
    return result
