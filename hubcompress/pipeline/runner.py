"""The one place that knows the order of the stages, and how a rerun resumes.

    teacher → compress → speedup → export → validate → card → push

Each stage writes its files atomically and is then marked done in ``.hubcompress/state.json``; a
rerun with the same recipe and model skips the stages marked done. ``start_at`` redoes a stage and
everything after it (the ``export``, ``validate`` and ``card`` commands).

Under a launcher (``torchrun --nproc-per-node N -m hubcompress run ...``, ``accelerate launch``)
every process runs the stages that train (teacher, compress) data-parallel; then the ranks meet,
and rank 0 alone runs the rest. Only rank 0 writes files (state.json included), so a rerun resumes
as after a one-process run, with any number of processes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic import write_json_atomic, write_text_atomic
from ..errors import BadInputError, DistributedRunError, GateFailedError, HubcompressError, OutputFolderError
from ..recipe import Recipe, load_recipe, parse_recipe
from .context import RunContext
from .export_stage import run_export
from .launch import PARALLEL_STAGES, Launch, barrier, device_of, from_main, leave, start_launch
from .publish import run_card, run_push
from .shrink import run_compress, run_speedup
from .state import RunState, recipe_digest
from .teacher import run_teacher
from .validate import run_validate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], dict[str, Any]]
    wanted: Callable[[RunContext], bool] = lambda ctx: True


STAGES: list[Stage] = [
    # Classifiers only: a teacher is held to the majority-class baseline of labelled eval data.
    Stage("teacher", run_teacher,
          lambda ctx: ctx.task.finetunes_teacher and ctx.task.labelled(ctx.recipe.data)),
    Stage("compress", run_compress),
    Stage("speedup", run_speedup),
    Stage("export", run_export, lambda ctx: ctx.recipe.export.onnx),
    Stage("validate", run_validate, lambda ctx: ctx.recipe.data is not None),
    Stage("card", run_card),
    Stage("push", run_push, lambda ctx: ctx.repo_id is not None),
]
STAGE_NAMES = [s.name for s in STAGES]

EXIT_OK, EXIT_GATE, EXIT_BAD_INPUT, EXIT_FAILED = 0, 1, 2, 3


@dataclass
class RunResult:
    """What a run did: ``exit_code`` 0 (ok), 1 (the gate failed; nothing pushed), and the report."""

    output: Path
    report: dict[str, Any]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    worker: bool = False  # a rank other than 0 of a launched run: done after compress, it wrote nothing

    @property
    def gate_passed(self) -> bool:
        return self.report.get("gate", {}).get("passed", True)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.gate_passed else EXIT_GATE


def _device(recipe: Recipe, launch: Launch | None = None) -> torch.device:
    return device_of(recipe.training.device, launch or Launch())


def _report(ctx: RunContext) -> dict[str, Any]:
    """report.json: every stage's result and time, in one file."""
    state = ctx.state
    validation = state.result("validate")
    compression = dict(state.result("compress"))
    # How the compression trained; null for a folder compressed before report.json had the entry.
    distributed, hardware = compression.pop("distributed", None), compression.pop("hardware", None)
    return {
        "base_model": ctx.base_model_id, "source": ctx.source, "revision": ctx.revision, "task": ctx.recipe.task,
        "recipe_digest": state.digest,
        "teacher": state.result("teacher") or None,
        "dtype": ctx.dtypes(),
        "distributed": distributed, "hardware": hardware,
        "compression": compression, "speedup": state.result("speedup"), "export": state.result("export"),
        "eval": validation.get("eval"), "quality": validation.get("quality"),
        "parity_to_pytorch_student": validation.get("parity_to_pytorch_student"),
        "latency_ms": validation.get("latency_ms"), "consumers": validation.get("consumers"),
        "gate": validation.get("gate", {"passed": True, "reasons": []}),
        "push": state.result("push") or None,
        "stage_seconds": {name: entry.get("seconds") for name, entry in state.stages.items()},
        # False while stages are left (a report written as each stage ends; a run killed half-way).
        "complete": all(state.done(s.name) for s in STAGES if s.name != "push" and s.wanted(ctx)),
    }


def open_run(source: str | None, recipe: Recipe | str | Path, output: str | Path, *, push_to_hub: str | None = None,
             fresh: bool = False, progress: bool = True, adopt: bool = False) -> RunContext:
    """Validate the inputs and open (or resume) the run's output folder."""
    recipe_dir = None
    if not isinstance(recipe, Recipe):
        path = Path(recipe)
        recipe, recipe_dir = load_recipe(path), path.resolve().parent
    source = source or (recipe.model.id if recipe.model else None)
    if not source:
        raise BadInputError("no model given: pass a hub id or folder, or set model.id in the recipe.")
    # The recipe as run: the model it ran on is written in, so the saved recipe reruns as is.
    data = recipe.model_dump(mode="json", exclude_none=True)
    data.setdefault("model", {})["id"] = source
    if push_to_hub:
        data.setdefault("push", {})["repo_id"] = push_to_hub
    resolved = parse_recipe(json.dumps(data), "<resolved recipe>")
    resolved._source = recipe._source or resolved._source  # errors name the user's file and line
    data = resolved.model_dump(mode="json", exclude_none=True)  # defaults filled in: a reread gives the same
    recipe_yaml = yaml.safe_dump(data, sort_keys=False)
    digest = recipe_digest(json.dumps({k: v for k, v in data.items() if k not in ("push", "card")}, sort_keys=True),
                           source, resolved.model.revision if resolved.model else None)
    output = Path(output)
    launch = start_launch(resolved.training.device)
    device = _device(resolved, launch)
    # Rank 0 alone reads, starts over (--fresh) and cleans the folder; the others take its view of the
    # run, so all agree on the stages left, even on a machine that does not share the folder.
    state = RunState.open(output, digest=digest, source=source, fresh=fresh, adopt=adopt) if launch.is_main \
        else RunState(output, digest, source, writer=False)
    state.digest, state.stages, state.recipe_dir = from_main(launch, (state.digest, state.stages, state.recipe_dir))
    if state.recipe_dir and recipe_dir == output.resolve():
        recipe_dir = Path(state.recipe_dir)  # reopened from the output's recipe.yaml: data paths keep their base
    state.recipe_dir = str(recipe_dir) if recipe_dir else state.recipe_dir
    return RunContext(recipe=resolved, recipe_yaml=recipe_yaml, recipe_dir=recipe_dir, source=source, output=output,
                      state=state, progress=progress and launch.is_main, device=device, push_to_hub=push_to_hub,
                      launch=launch)


def run_stages(ctx: RunContext, *, start_at: str | None = None, only: list[str] | None = None,
               on_stage: Callable[[str, str], None] | None = None) -> RunResult:
    """Run the stages in order, skipping those already done (``start_at`` redoes it and the ones after).

    Under a launcher, the ranks other than 0 return after the data-parallel stages (``worker``)."""
    if start_at is not None:
        if start_at not in STAGE_NAMES:
            raise BadInputError(f"no stage {start_at!r}; stages: {', '.join(STAGE_NAMES)}")
        ctx.state.invalidate_from(STAGE_NAMES[STAGE_NAMES.index(start_at):])
    launch = ctx.launch
    if not launch.is_main:
        on_stage = None  # one process speaks for the run
    else:
        write_text_atomic(ctx.output / "recipe.yaml", ctx.recipe_yaml)
    result = RunResult(ctx.output, {})
    for stage in STAGES:
        if launch.parallel and stage.name not in PARALLEL_STAGES:
            leave(launch)  # a no-op after the first time
            if not launch.is_main:
                logger.info("rank %d: the data-parallel stages are done; rank 0 finishes the run", launch.rank)
                return RunResult(ctx.output, {}, worker=True)
        if only is not None and stage.name not in only:
            continue
        if not stage.wanted(ctx):
            continue
        if ctx.state.done(stage.name):
            result.skipped.append(stage.name)
            if on_stage:
                on_stage(stage.name, "skipped (done)")
            continue
        if stage.name == "push" and not ctx.state.result("validate").get("gate", {"passed": True})["passed"]:
            logger.warning("the validation gate failed: nothing is pushed (see report.json)")
            if on_stage:
                on_stage(stage.name, "not pushed: the gate failed")
            continue
        if on_stage:
            on_stage(stage.name, "running")
        start = time.perf_counter()
        try:
            stage_result = stage.run(ctx)
        except GateFailedError as error:
            # A gate that stops the run before the later stages (the teacher's): report.json says why too.
            if launch.is_main:
                write_json_atomic(ctx.output / "report.json", {**_report(ctx), **error.report,
                                                               "gate": {"passed": False, "reasons": [str(error)]}})
            raise
        except Exception as error:
            if not launch.parallel or isinstance(error, HubcompressError) or stage.name not in PARALLEL_STAGES:
                raise
            raise DistributedRunError(
                f"rank {launch.rank} of {launch.world_size}: the {stage.name} stage failed: {type(error).__name__}: "
                f"{error}. When another process died or was killed the launcher's log names it; the stages "
                "finished before are kept: rerun the same command to resume.") from error
        ctx.state.finish(stage.name, stage_result, seconds=time.perf_counter() - start)  # rank 0 writes it
        result.ran.append(stage.name)
        if launch.is_main:
            write_json_atomic(ctx.output / "report.json", _report(ctx))
        barrier(launch)  # what rank 0 wrote in a data-parallel stage (a fine-tuned teacher) is there for all
        if on_stage:
            on_stage(stage.name, f"done in {time.perf_counter() - start:.1f} s")
    leave(launch)  # a launched run whose every stage is data-parallel (``only``)
    if not launch.is_main:
        return RunResult(ctx.output, {}, worker=True)
    result.report = _report(ctx)
    write_json_atomic(ctx.output / "report.json", result.report)
    return result


def reopen(output: str | Path, *, progress: bool = True, push_to_hub: str | None = None) -> RunContext:
    """The run whose output folder is ``output`` (its recipe.yaml names the model)."""
    output = Path(output)
    if not (output / "recipe.yaml").exists():
        raise OutputFolderError(f"{output} has no recipe.yaml: it is not the output folder of `hubcompress run`.")
    return open_run(None, output / "recipe.yaml", output, progress=progress, push_to_hub=push_to_hub, adopt=True)


def run_pipeline(source: str | None, recipe: Recipe | str | Path, output: str | Path, *,
                 push_to_hub: str | None = None, fresh: bool = False, progress: bool = True) -> RunResult:
    """Compress, shrink, export, validate, card and (optionally) push, resuming finished stages.

    Example (a tiny model, one-shot pruning, no data):
        >>> import tempfile, pathlib
        >>> from transformers import BertConfig, BertModel, BertTokenizerFast
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "vocab.txt").write_text("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]))
        >>> BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(folder)  # doctest: +ELLIPSIS
        (...)
        >>> BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                      intermediate_size=64, vocab_size=6)).save_pretrained(folder)
        >>> recipe = parse_recipe("task: feature-extraction\\npruning: {pruner: L1NormPruner, heads: 0.5}\\n"
        ...                       "export: {int8: none}\\ncard: {base_model: org/tiny}\\n")
        >>> result = run_pipeline(str(folder), recipe, folder / "out", progress=False)
        >>> result.exit_code, result.ran
        (0, ['compress', 'speedup', 'export', 'card'])
    """
    ctx = open_run(source, recipe, output, push_to_hub=push_to_hub, fresh=fresh, progress=progress)
    return run_stages(ctx)
