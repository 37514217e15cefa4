"""The command line: parses arguments and calls the library; nothing else lives here."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.traceback import Traceback

from .cli_output import configure_output, exit_code_for, is_expected
from .errors import EXIT_INTERRUPTED

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress a pretrained model from a model hub, shrink it, validate it and publish it.")
console = Console()


_state = {"verbose": False}


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log details, other libraries' output "
                                          "and the traceback of an unexpected error (before or after the command).")
             ) -> None:
    _state["verbose"] = verbose
    configure_output(verbose)


def _fail(message: object, code: int) -> typer.Exit:
    # soft_wrap: rich would break a long message (a long path) across lines at the terminal width.
    console.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """Turn any error into its message and exit code (see hubcompress.errors); a traceback only with -v."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished stages are kept; rerun the same command to resume.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if _state["verbose"]:
            console.print(Traceback.from_exception(type(exc), exc, exc.__traceback__))
        message = str(exc) if is_expected(exc) else f"{type(exc).__name__}: {exc} (rerun with -v for the traceback)"
        raise _fail(message, exit_code_for(exc)) from None


def _run_and_summarise(start: Callable[[Callable[[str, str], None]], Any]) -> None:
    """Run pipeline stages with a line per stage, then the summary table; exit 0 / 1 / 2 / 3 / 4."""
    def on_stage(name: str, status: str) -> None:
        console.print(f"[bold]{name}[/]: {status}", highlight=False, soft_wrap=True)

    with _exit_codes():
        result = start(on_stage)
    if result.worker:  # a rank other than 0 under torchrun / accelerate: rank 0 reports the run
        raise typer.Exit(0)
    console.print(summary_table(result.report))
    gate = result.report.get("gate", {})
    if not gate.get("passed", True):
        for reason in gate.get("reasons", []):
            console.print(f"[red]gate:[/] {reason}", highlight=False, soft_wrap=True)
        console.print(f"[red]the validation gate failed[/]: nothing was pushed; the artifacts are in {result.output}",
                      soft_wrap=True)
    else:
        console.print(f"wrote {result.output}" + (f"; pushed to {result.report['push']['commit_url']}"
                                                    if result.report.get("push") else ""), soft_wrap=True)
    raise typer.Exit(result.exit_code)


def summary_table(report: dict[str, Any]) -> Table:
    """Quality, size and latency of each artifact, as one table."""
    table = Table(title=f"{report.get('base_model')} ({report.get('task')})")
    quality = report.get("quality") or {}
    latency = (report.get("latency_ms") or {}).get("batch8", {})
    columns = sorted({k for values in quality.values() for k in values})
    from .serving.artifacts import ARTIFACTS

    names = [name for name in ("teacher", "student", *ARTIFACTS) if name in quality or name in latency]
    # The names never shrink to "openvino_…": in a narrow terminal the number columns fold instead.
    table.add_column("artifact", no_wrap=True, min_width=max(map(len, names), default=8))
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    seq = (report.get("latency_ms") or {}).get("sequence_length")
    table.add_column(f"ms, batch 8 x {seq}", justify="right")
    for name in names:
        cells = []
        for column in columns:
            value = quality.get(name, {}).get(column)
            value = value.get("mean") if isinstance(value, dict) else value
            cells.append("" if value is None else f"{value:.4f}")
        lat = latency.get(name)
        table.add_row(name, *cells, "" if lat is None else f"{lat:.1f}")
    caption = []
    before, after = (report.get("compression") or {}).get("params_before"), (report.get("speedup") or {}).get("params_after")
    if before and after:
        caption.append(f"parameters {before:,} -> {after:,}")
    seconds = report.get("stage_seconds") or {}
    caption.append(", ".join(f"{name} {s:.0f} s" for name, s in seconds.items() if s is not None))
    table.caption = "; ".join(c for c in caption if c)
    return table


@app.command()
def run(
    model: Optional[str] = typer.Argument(None, help="Hub id (org/name) or local folder; default: the recipe's model.id."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="The recipe YAML (see `hubcompress recipe init`)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder; default: out/<model name>."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Push the result to this repo (org/name) "
                                              "when the validation gate passes."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over instead of resuming the output folder's run."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Compress, shrink, validate, export, write the card and push: one command, resumable.

    Exit codes: 0 ok, 1 the validation gate failed (nothing pushed), 2 bad input, 3 a stage failed.
    """
    from .pipeline import open_run, run_stages

    def start(on_stage: Callable[[str, str], None]) -> Any:
        name = (model or "").rstrip("/").rsplit("/", 1)[-1] or Path(str(recipe)).stem
        ctx = open_run(model, recipe, output or Path("out") / name, push_to_hub=push_to_hub, fresh=fresh,
                       progress=progress)
        return run_stages(ctx, on_stage=on_stage)

    _run_and_summarise(start)


def _redo(folder: Path, start_at: str, only: list[str], progress: bool) -> None:
    from .pipeline import reopen, run_stages

    _run_and_summarise(lambda on_stage: run_stages(reopen(folder, progress=progress), start_at=start_at, only=only,
                                                   on_stage=on_stage))


@app.command("export")
def export_cmd(folder: Path = typer.Argument(..., help="Output folder of `hubcompress run`."),
               progress: bool = typer.Option(True, "--progress/--no-progress"),
               openvino: bool = typer.Option(False, "--openvino", help="Also write OpenVINO IR: fp32 and NNCF int8 "
                                             "(export.openvino: int8, kept in the folder's recipe.yaml).")) -> None:
    """Redo the ONNX export (fp32 and int8, as the folder's recipe.yaml says), validation and card."""
    if not openvino:
        _redo(folder, "export", ["export", "validate", "card"], progress)
        return
    from .pipeline import run_stages
    from .pipeline.export_stage import reopen_with_openvino

    _run_and_summarise(lambda on_stage: run_stages(reopen_with_openvino(folder, progress=progress), start_at="export",
                                                   only=["export", "validate", "card"], on_stage=on_stage))


@app.command("validate")
def validate_cmd(folder: Path = typer.Argument(..., help="Output folder of `hubcompress run`."),
                 progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
    """Redo the validation against the teacher (and the card). Exit code 1 when the gate fails."""
    _redo(folder, "validate", ["validate", "card"], progress)


@app.command("card")
def card_cmd(folder: Path = typer.Argument(..., help="Output folder of `hubcompress run`.")) -> None:
    """Rewrite the model card (README.md) from the folder's report."""
    _redo(folder, "card", ["card"], False)


@app.command()
def push(
    folder: Path = typer.Argument(..., help="The folder to push (an output folder of `hubcompress run`)."),
    repo_id: str = typer.Argument(..., help="Target repo, org/name."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    create_pr: bool = typer.Option(False, "--create-pr", help="Open a pull request instead of committing."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to commit to."),
    force: bool = typer.Option(False, "--force", help="Push even a folder that is not a run's output, or whose "
                               "gate failed."),
) -> None:
    """Push an output folder to the hub (HF_ENDPOINT and HF_TOKEN honoured; the token is never logged).

    It refuses a folder that is not a run's output, or whose gate failed, unless --force; the run's
    bookkeeping and temporary files are never sent.
    """
    from .hub import push_folder
    from .pipeline.publish import PUSH_IGNORE, check_publishable

    with _exit_codes():
        check_publishable(folder, force=force)
        result = push_folder(folder, repo_id, private=private, create_pr=create_pr, revision=revision,
                             ignore_patterns=PUSH_IGNORE)
    console.print(f"pushed {folder} to {result.commit_url}" + (f" (PR {result.pr_url})" if result.pr_url else ""),
                  soft_wrap=True)


@app.command()
def serve(
    model: str = typer.Argument(..., help="Output folder (with onnx/model.onnx) or hub repo id."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback unless you mean to expose it."),
    port: int = typer.Option(8080, help="TCP port."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime or openvino; default: the runtime of "
                                          "the fastest file whose validation passed (report.json), logged at start."),
    int8: Optional[bool] = typer.Option(None, "--int8/--fp32", help="Serve an int8 file (onnx/model_quantized.onnx, "
                                        "openvino/openvino_model_qint8_quantized.xml) or an fp32 one; default: "
                                        "the fastest validated."),
    model_name: Optional[str] = typer.Option(None, help="Name in /v2/models/{name}; default: the folder's name."),
    max_batch_size: int = typer.Option(32, help="Most rows per model call; 1 turns dynamic batching off."),
    max_delay_ms: float = typer.Option(5.0, help="How long a request waits for others to join its batch."),
    max_items: int = typer.Option(64, help="Most texts or tensor rows per request."),
    max_tokens: Optional[int] = typer.Option(None, help="Longest token sequence; default: read from the folder."),
    overflow: str = typer.Option("truncate", help="Longer texts: truncate or reject."),
    max_body_bytes: int = typer.Option(4 * 1024 * 1024, help="Largest request body in bytes."),
    threads: Optional[int] = typer.Option(None, help="The runtime's intra-op threads; default: all cores."),
) -> None:
    """Serve an exported model over HTTP (Open Inference Protocol / KServe v2, plus POST /predict)."""
    import logging

    from .serving import ServerSettings
    from .serving import serve as run_server

    # A server states at start which file it serves in which runtime, and why, even without -v.
    logging.getLogger("hubcompress.serving").setLevel(logging.INFO)
    with _exit_codes():
        settings = ServerSettings(model_name=model_name, int8=int8, backend=backend, max_batch_size=max_batch_size,
                                  max_delay_ms=max_delay_ms, max_items=max_items, max_tokens=max_tokens,
                                  overflow=overflow, max_body_bytes=max_body_bytes, intra_op_threads=threads)  # type: ignore[arg-type]
        run_server(model, settings, host=host, port=port)


@app.command("export-triton")
def export_triton(
    model: str = typer.Argument(..., help="Output folder (with onnx/model.onnx) or hub repo id."),
    repository: Path = typer.Option(Path("model_repository"), "--repository", "-r", help="Triton model repository."),
    int8: bool = typer.Option(False, "--int8", help="Export onnx/model_quantized.onnx instead of the fp32 file."),
    model_name: Optional[str] = typer.Option(None, help="Model directory name; default: the folder's name."),
    max_batch_size: int = typer.Option(32, help="Triton max_batch_size (0: no batching)."),
    max_queue_delay_us: int = typer.Option(2000, help="Dynamic batching delay in microseconds."),
    instances: int = typer.Option(1, help="CPU instances of the model."),
) -> None:
    """Write a Triton Inference Server model repository (ONNX Runtime backend) for an exported model."""
    from .serving import export_triton_repository

    with _exit_codes():
        result = export_triton_repository(model, repository, int8=int8, model_name=model_name,
                                          max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                                          instance_count=instances)
    console.print(f"wrote {result.config_path} and {result.onnx_path}")


recipe_app = typer.Typer(no_args_is_help=True, help="Check or start a recipe file.")
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("check")
def recipe_check(path: Path = typer.Argument(..., help="The recipe YAML file."),
                 model: Optional[str] = typer.Option(None, "--model", "-m", help="Check against this hub id or "
                                                     "folder instead of the recipe's model.id.")) -> None:
    """Validate a recipe and build what `run` builds from it (compressors on the model's skeleton, the
    ONNX export config), without training; errors name the file, line and key. Exit code 2 when wrong."""
    from .pipeline.check import check_recipe

    with _exit_codes():
        result = check_recipe(path, model)
    recipe = result.recipe
    stages = [name for name in ("pruning", "quantization", "distillation") if getattr(recipe, name)]
    console.print(f"{path}: ok ({recipe.task}; {', '.join(stages) or 'no compression'}; "
                  f"int8 {recipe.export.int8})", soft_wrap=True, highlight=False)
    for line in result.built:
        console.print(f"  built: {line}", soft_wrap=True, highlight=False)
    for note in result.notes:
        console.print(f"  not checked: {note}", soft_wrap=True, highlight=False)


@recipe_app.command("init")
def recipe_init(out: Path = typer.Option(Path("recipe.yaml"), "--out", "-o", help="Where to write it.")) -> None:
    """Write a commented starter recipe (never overwrites a file)."""
    from .recipe import STARTER

    if out.exists():
        console.print(f"[red]{out} exists[/]; choose another --out.")
        raise typer.Exit(2)
    out.write_text(STARTER)
    console.print(f"wrote {out}; check it with `hubcompress recipe check {out}`")


VERBOSE_FLAGS = ("-v", "--verbose")


def main(argv: list[str] | None = None) -> None:
    """The ``hubcompress`` command: ``-v`` / ``--verbose`` work before or after the sub-command.

    Example:
        >>> _global_flags_first(["run", "m", "-r", "x.yaml", "-v"])
        ['-v', 'run', 'm', '-r', 'x.yaml']
    """
    app(args=_global_flags_first(sys.argv[1:] if argv is None else argv), prog_name="hubcompress")


def _global_flags_first(args: list[str]) -> list[str]:
    # typer reads the callback's options only before the sub-command; users put -v anywhere.
    if "--" in args:
        head, tail = args[:args.index("--")], args[args.index("--"):]
    else:
        head, tail = args, []
    flags = [a for a in head if a in VERBOSE_FLAGS]
    return flags[:1] + [a for a in head if a not in VERBOSE_FLAGS] + tail


if __name__ == "__main__":  # pragma: no cover
    main()
