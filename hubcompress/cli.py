"""The command line: parses arguments and calls the library; nothing else lives here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress a pretrained model from a model hub, shrink it, validate it and publish it.")
console = Console()


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def demo(
    model: Optional[str] = typer.Argument(None, help="Hub id or local folder; default: the packaged all-MiniLM-L6-v2."),
    out: Path = typer.Option(Path("out/demo"), "--out", "-o", help="Output folder."),
    heads: float = typer.Option(0.5, help="Fraction of attention heads to prune in each layer."),
    ffn: float = typer.Option(0.5, help="Fraction of FFN neurons to prune in each layer."),
    pruner: str = typer.Option("l1", help="One-shot pruner: level, l1, l2 or fpgm."),
) -> None:
    """Prune heads and FFN of a sentence-embedding model with whole-head groups; report fidelity."""
    from .compression.pruning import PRUNERS_FOR_DEMO
    from .demo import run_demo
    from .errors import HubcompressError

    if pruner not in PRUNERS_FOR_DEMO:
        console.print(f"[red]unknown --pruner {pruner!r}[/]; use one of {sorted(PRUNERS_FOR_DEMO)}")
        raise typer.Exit(2)
    try:
        with console.status("loading the model and generating masks..."):
            report = run_demo(model, out, heads=heads, ffn=ffn, pruner=pruner)
    except HubcompressError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"{report['pruner']} pruning of {model or 'all-MiniLM-L6-v2 (packaged)'}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("heads / FFN ratio asked", f"{heads:.2f} / {ffn:.2f}")
    table.add_row("masked share of pruned weights", f"{report['masked_fraction_of_pruned_weights']:.3f}")
    table.add_row("mask generation (s)", f"{report['mask_seconds']:.2f}")
    cos = report["embedding_cosine_to_dense"]
    table.add_row("embedding cosine to dense, no training (mean / min)", f"{cos['mean']:.3f} / {cos['min']:.3f}")
    params = report["parameters"]
    table.add_row("parameters before / after speedup", f"{params['before']:,} / {params['after']:,}")
    table.add_row("speedup (s)", f"{report['speedup_seconds']:.2f}")
    lat = report["latency_ms_batch16_seq128"]
    table.add_row("latency batch 16 x 128, dense / pruned PyTorch (ms)", f"{lat['dense']:.0f} / {lat['pruned']:.0f}")
    ort_lat = report["onnx"]["latency_ms_batch16_seq128"]
    table.add_row("latency, pruned ONNX fp32 / int8 (ms)",
                  f"{ort_lat['model.onnx']:.0f} / {ort_lat['model.int8.onnx']:.0f}")
    console.print(table)
    console.print(f"wrote {out} (hubcompress.from_pretrained; hubcompress serve {out}), onnx/, report.json")


@app.command()
def serve(
    model: str = typer.Argument(..., help="Output folder (with onnx/model.onnx) or hub repo id."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback unless you mean to expose it."),
    port: int = typer.Option(8080, help="TCP port."),
    int8: bool = typer.Option(False, "--int8", help="Serve onnx/model.int8.onnx instead of the fp32 file."),
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
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command("export-triton")
def export_triton(
    model: str = typer.Argument(..., help="Output folder (with onnx/model.onnx) or hub repo id."),
    repository: Path = typer.Option(Path("model_repository"), "--repository", "-r", help="Triton model repository."),
    int8: bool = typer.Option(False, "--int8", help="Export onnx/model.int8.onnx instead of the fp32 file."),
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
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
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
