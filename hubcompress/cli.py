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
    table = Table(title=f"{report['pruner']} pruning of {Path(report['model']).name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("heads / FFN ratio asked", f"{heads:.2f} / {ffn:.2f}")
    table.add_row("masked share of pruned weights", f"{report['masked_fraction_of_pruned_weights']:.3f}")
    table.add_row("mask generation (s)", f"{report['mask_seconds']:.2f}")
    cos = report["embedding_cosine_to_dense"]
    table.add_row("embedding cosine to dense (mean / min)", f"{cos['mean']:.3f} / {cos['min']:.3f}")
    console.print(table)
    console.print(f"wrote {out / 'masks.safetensors'} and {out / 'report.json'}")


if __name__ == "__main__":  # pragma: no cover
    app()
