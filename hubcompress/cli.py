"""The command line: parses arguments and calls the library; nothing else lives here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress a pretrained model from a model hub, shrink it, validate it and publish it.")
console = Console()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _fail(exc: BaseException, code: int) -> typer.Exit:
    console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _run_and_summarise(start: Callable[[Callable[[str, str], None]], Any]) -> None:
    """Run pipeline stages with a line per stage, then the summary table; exit 0 / 1 / 2 / 3."""
    from .errors import HubcompressError
    from .pipeline import EXIT_BAD_INPUT, EXIT_FAILED

    def on_stage(name: str, status: str) -> None:
        console.print(f"[bold]{name}[/]: {status}", highlight=False)

    try:
        result = start(on_stage)
    except HubcompressError as exc:
        raise _fail(exc, EXIT_BAD_INPUT) from exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished stages are kept; rerun the same command to resume.")
        raise typer.Exit(130) from None
    except Exception as exc:  # a stage failed for a reason that is not the user's input
        logging.getLogger("hubcompress").debug("stage failed", exc_info=True)
        raise _fail(f"{type(exc).__name__}: {exc} (rerun with -v for details; finished stages are kept)",
                    EXIT_FAILED) from exc
    console.print(summary_table(result.report))
    gate = result.report.get("gate", {})
    if not gate.get("passed", True):
        for reason in gate.get("reasons", []):
            console.print(f"[red]gate:[/] {reason}", highlight=False)
        console.print(f"[red]the validation gate failed[/]: nothing was pushed; the artifacts are in {result.output}")
    else:
        console.print(f"wrote {result.output}" + (f"; pushed to {result.report['push']['commit_url']}"
                                                    if result.report.get("push") else ""))
    raise typer.Exit(result.exit_code)


def summary_table(report: dict[str, Any]) -> Table:
    """Quality, size and latency of each artifact, as one table."""
    table = Table(title=f"{report.get('base_model')} ({report.get('task')})")
    quality = report.get("quality") or {}
    latency = (report.get("latency_ms") or {}).get("batch8", {})
    columns = sorted({k for values in quality.values() for k in values})
    table.add_column("artifact")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    seq = (report.get("latency_ms") or {}).get("sequence_length")
    table.add_column(f"ms, batch 8 x {seq}", justify="right")
    for name in ("teacher", "student", "onnx_fp32", "onnx_int8"):
        if name not in quality and name not in latency:
            continue
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
               progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
    """Redo the ONNX export (fp32 and int8, as the folder's recipe.yaml says), validation and card."""
    _redo(folder, "export", ["export", "validate", "card"], progress)


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
    force: bool = typer.Option(False, "--force", help="Push even when report.json says the gate failed."),
) -> None:
    """Push a folder to the hub (HF_ENDPOINT and HF_TOKEN honoured; the token is never logged)."""
    import json

    from .errors import HubcompressError
    from .hub import push_folder
    from .pipeline.publish import PUSH_IGNORE

    report = folder / "report.json"
    if report.exists() and not force:
        gate = json.loads(report.read_text()).get("gate", {"passed": True})
        if not gate.get("passed", True):
            console.print("[red]the validation gate failed for this folder[/]: " + "; ".join(gate.get("reasons", []))
                          + "\npass --force to push it anyway.", highlight=False)
            raise typer.Exit(1)
    try:
        result = push_folder(folder, repo_id, private=private, create_pr=create_pr, revision=revision,
                             ignore_patterns=PUSH_IGNORE)
    except HubcompressError as exc:
        raise _fail(exc, 2) from exc
    console.print(f"pushed {folder} to {result.commit_url}" + (f" (PR {result.pr_url})" if result.pr_url else ""))


@app.command()
def serve(
    model: str = typer.Argument(..., help="Output folder (with onnx/model.onnx) or hub repo id."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback unless you mean to expose it."),
    port: int = typer.Option(8080, help="TCP port."),
    int8: bool = typer.Option(False, "--int8", help="Serve onnx/model_quantized.onnx instead of the fp32 file."),
    model_name: Optional[str] = typer.Option(None, help="Name in /v2/models/{name}; default: the folder's name."),
    max_batch_size: int = typer.Option(32, help="Most rows per model call; 1 turns dynamic batching off."),
    max_delay_ms: float = typer.Option(5.0, help="How long a request waits for others to join its batch."),
    max_items: int = typer.Option(64, help="Most texts or tensor rows per request."),
    max_tokens: Optional[int] = typer.Option(None, help="Longest token sequence; default: read from the folder."),
    overflow: str = typer.Option("truncate", help="Longer texts: truncate or reject."),
    max_body_bytes: int = typer.Option(4 * 1024 * 1024, help="Largest request body in bytes."),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime intra-op threads; default: all cores."),
) -> None:
    """Serve an exported model over HTTP (Open Inference Protocol / KServe v2, plus POST /predict)."""
    from .errors import HubcompressError
    from .serving import ServerSettings
    from .serving import serve as run_server

    try:
        settings = ServerSettings(model_name=model_name, int8=int8, max_batch_size=max_batch_size,
                                  max_delay_ms=max_delay_ms, max_items=max_items, max_tokens=max_tokens,
                                  overflow=overflow, max_body_bytes=max_body_bytes, intra_op_threads=threads)  # type: ignore[arg-type]
        run_server(model, settings, host=host, port=port)
    except HubcompressError as exc:
        raise _fail(exc, 2) from exc


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
    from .errors import HubcompressError
    from .serving import export_triton_repository

    try:
        result = export_triton_repository(model, repository, int8=int8, model_name=model_name,
                                          max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                                          instance_count=instances)
    except HubcompressError as exc:
        raise _fail(exc, 2) from exc
    console.print(f"wrote {result.config_path} and {result.onnx_path}")


recipe_app = typer.Typer(no_args_is_help=True, help="Check or start a recipe file.")
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("check")
def recipe_check(path: Path = typer.Argument(..., help="The recipe YAML file.")) -> None:
    """Validate a recipe; errors name the file, line and key. Exit code 2 when it is wrong."""
    from .recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(path)
    except RecipeError as exc:
        console.print(f"[red]{exc}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    stages = [name for name in ("pruning", "quantization", "distillation") if getattr(recipe, name)]
    console.print(f"{path}: ok ({recipe.task}; {', '.join(stages) or 'no compression'}; "
                  f"int8 {recipe.export.int8})")


@recipe_app.command("init")
def recipe_init(out: Path = typer.Option(Path("recipe.yaml"), "--out", "-o", help="Where to write it.")) -> None:
    """Write a commented starter recipe (never overwrites a file)."""
    from .recipe import STARTER

    if out.exists():
        console.print(f"[red]{out} exists[/]; choose another --out.")
        raise typer.Exit(2)
    out.write_text(STARTER)
    console.print(f"wrote {out}; check it with `hubcompress recipe check {out}`")


if __name__ == "__main__":  # pragma: no cover
    app()
