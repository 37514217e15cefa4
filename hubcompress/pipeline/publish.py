"""Stages 5 and 6: the model card (through the leaf package ``model_cards``) and the push."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..architectures import layer_widths
from ..checkpoint import MANIFEST, library_versions
from ..atomic import TEMP_PATTERNS
from ..errors import GateFailedError, OutputFolderError
from ..pooling import Pooling
from ..serving.artifacts import ARTIFACTS
from .context import RunContext
from .export_stage import FP32, INT8
from .launch import cpu_name
from .tasks.feature_extraction import FIDELITY_METRICS

logger = logging.getLogger(__name__)

PRETTY = {"teacher": "teacher (PyTorch fp32)", "student": "student (PyTorch fp32)",
          **{name: f"student ({artifact.label.replace('ONNX Runtime', 'ONNX')})" for name, artifact in ARTIFACTS.items()}}
LATENCY_COLUMNS = {"batch1": "batch 1", "batch8": "batch 8"}  # report.json's latency rows -> the card's columns


def _metrics(ctx: RunContext, name: str, quality: dict[str, Any]) -> list[Any]:
    from model_cards import Metric

    values = quality.get(name, {})
    if not values:
        return []
    data = ctx.data_ids()
    fidelity = ctx.state.result("validate").get("eval", {}).get("fidelity")
    # The fidelity metrics were measured on their own texts: the card names those, and how many.
    on_fidelity = {"name": fidelity["name"], "id": fidelity["id"], "split": f"{fidelity['rows']} texts"} \
        if fidelity else data
    out = []
    for key, value in values.items():
        if isinstance(value, dict):  # cosine_to_teacher: {mean, min, p05}
            key, value = f"{key}_mean", value.get("mean")
        where = on_fidelity if key in FIDELITY_METRICS else data
        if value is not None:
            out.append(Metric(key, float(value), where["name"], where["id"], ctx.recipe.task, where["split"],
                              PRETTY.get(name)))
    return out


def _hardware(ctx: RunContext) -> dict[str, Any] | None:
    """What compressed the model (the card's "Trained on" line): the compress stage's hardware and processes."""
    compression = ctx.state.result("compress")
    hardware = compression.get("hardware")
    if not hardware:
        return None
    distributed = compression.get("distributed") or {}
    return {**hardware, "backend": distributed.get("backend"), "global_batch_size": distributed.get("global_batch_size")}


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def _present(ctx: RunContext, name: str) -> str | None:
    """The artifact's path in the folder when all its files are there (an IR needs its .bin too)."""
    artifact = ARTIFACTS[name]
    return artifact.path if artifact.present(ctx.output) else None


def run_card(ctx: RunContext) -> dict[str, Any]:
    from model_cards import CardInputs, write_card

    from .shrink import drop_full_size_weights

    drop_full_size_weights(ctx)  # also when there was no export stage
    validation = ctx.state.result("validate")
    quality = validation.get("quality", {})
    latency_ms = validation.get("latency_ms", {})
    student = ctx.student()
    teacher_layers = layer_widths(ctx.teacher)
    depth = (ctx.state.result("compress") or {}).get("depth")
    # After a layer drop, student layer j is the teacher's layer kept[j].
    kept = depth["kept"] if depth else range(len(teacher_layers))
    layers = [{**row, "heads_total": teacher_layers[k]["heads"], "ffn_total": teacher_layers[k]["ffn"]}
              for row, k in zip(layer_widths(student), kept)]
    card = ctx.recipe.card
    sentence_transformers = (ctx.output / "modules.json").exists()
    pooling = Pooling.from_folder(ctx.output).to_dict() if ctx.task.pooled else None
    loading = json.loads((ctx.output / MANIFEST).read_text()).get("loading")
    inputs = CardInputs(
        repo_id=ctx.repo_id or ctx.output.name,
        base_model=ctx.base_model_id,
        base_model_revision=ctx.revision,
        int8=(ctx.output / INT8).exists(),
        library_name="sentence-transformers" if sentence_transformers else "transformers",
        pipeline_tag=ctx.recipe.task,
        tags=["hubcompress", *card.tags],
        datasets=[ctx.data_ids()["id"]] if ctx.recipe.data else [],
        license=card.license,
        language=card.language,
        teacher_metrics=_metrics(ctx, "teacher", quality),
        student_metrics=_metrics(ctx, "student", quality),
        onnx_int8_metrics=_metrics(ctx, "onnx_int8", quality),
        openvino_int8_metrics=_metrics(ctx, "openvino_int8", quality),
        size_bytes_before=sum(p.numel() * p.element_size() for p in ctx.teacher.parameters()),
        size_bytes_after=_size(ctx.output / "model.safetensors"),
        params_before=sum(p.numel() for p in ctx.teacher.parameters()),
        params_after=sum(p.numel() for p in student.parameters()),
        layers=layers,
        latencies_by_batch={title: {PRETTY[k]: v for k, v in latency_ms[key].items()}
                            for key, title in LATENCY_COLUMNS.items() if latency_ms.get(key)},
        cpu_name=cpu_name(),
        latency_setup=f"{latency_ms.get('sequence_length')} tokens, all cores",
        recipe_yaml=ctx.recipe_yaml,
        versions=library_versions(("hubcompress", "torch", "transformers", "onnx", "onnxruntime", "huggingface_hub",
                                   *(("openvino", "nncf") if _present(ctx, "openvino_fp32") else ()))),
        onnx_path=FP32 if (ctx.output / FP32).exists() else None,
        onnx_int8_path=INT8 if (ctx.output / INT8).exists() else None,
        openvino_path=_present(ctx, "openvino_fp32"),
        openvino_int8_path=_present(ctx, "openvino_int8"),
        auto_class=ctx.task.auto_class,
        trust_remote_code=loading == "remote-code",
        sentence_transformers=sentence_transformers,
        pooling=pooling,
        fidelity_texts=validation.get("eval", {}).get("fidelity"),
        verdicts={PRETTY[name]: verdict for name, verdict in validation.get("gate", {}).get("verdicts", {}).items()},
        teacher=ctx.state.result("teacher") or None,
        dtype=ctx.dtypes(),
        depth=depth,
        hardware=_hardware(ctx),
    )
    readme = write_card(inputs, ctx.output)
    return {"path": readme.name, "layers": layers}


# The run's bookkeeping and any temporary file a killed writer left stay local.
PUSH_IGNORE = [".hubcompress/*", ".hubcompress/**", *TEMP_PATTERNS]
# What every output folder of `hubcompress run` holds, whatever the recipe.
OUTPUT_CONTRACT = ("recipe.yaml", "hubcompress.json", "config.json", "report.json")


def check_publishable(folder: Path, *, force: bool = False) -> None:
    """Refuse to publish a folder that is not a run's output, or whose gate failed (``force`` overrides).

    Raises:
        OutputFolderError: a file of the output contract is missing (exit 2).
        GateFailedError: report.json says the validation gate failed (exit 1).
    """
    folder = Path(folder)
    missing = [name for name in OUTPUT_CONTRACT if not (folder / name).is_file()]
    if missing and not force:
        raise OutputFolderError(
            f"{folder} is not an output folder of `hubcompress run` (it has no {', '.join(missing)}): push the "
            "folder a run wrote, or pass --force to push this one as it is.")
    report = folder / "report.json"
    if report.is_file() and not force:
        try:
            gate = json.loads(report.read_text()).get("gate") or {"passed": True}
        except ValueError as error:
            raise OutputFolderError(f"{report}: not valid JSON ({error}); rerun `hubcompress validate {folder}`.") \
                from None
        if not gate.get("passed", True):
            raise GateFailedError(f"the validation gate failed for {folder}: " + "; ".join(gate.get("reasons", []))
                                  + ". Nothing was pushed; pass --force to push it anyway.")


def run_push(ctx: RunContext) -> dict[str, Any]:
    from ..hub import push_folder

    gate = ctx.state.result("validate").get("gate", {"passed": True})
    if not gate["passed"]:
        raise GateFailedError("the validation gate failed, so nothing is pushed: " + "; ".join(gate["reasons"]))
    push = ctx.recipe.push
    result = push_folder(ctx.output, ctx.repo_id, private=push.private, create_pr=push.create_pr,
                         revision=push.revision, ignore_patterns=PUSH_IGNORE,
                         commit_message=f"hubcompress: {ctx.base_model_id} compressed ({ctx.recipe.task})")
    return {"repo_id": result.repo_id, "commit_url": result.commit_url, "pr_url": result.pr_url,
            "revision": result.revision}
