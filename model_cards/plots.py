"""Plots embedded in the model card (PNG, drawn with matplotlib's Agg renderer).

matplotlib is imported lazily and only through `matplotlib.figure.Figure`, never `pyplot`: no
global figure state, no GUI backend is ever selected, and importing `model_cards` stays cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model_cards._io import write_atomic
from model_cards.inputs import normalized_layers

logger = logging.getLogger(__name__)

LAYER_PLOT_NAME = "layer_widths.png"


def plot_layer_widths(layers: list[dict[str, Any]], path: str | Path) -> Path:
    """Draw kept attention heads and FFN width per layer, next to the original widths.

    Args:
        layers: one dict per layer, see `model_cards.inputs.LAYER_KEYS`.
        path: the PNG file to write (atomically).

    Returns:
        The path written.

    Raises:
        ImportError: when matplotlib is not installed.
        ValueError: when `layers` is empty or malformed.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "w.png"
        >>> plot_layer_widths([{"layer": 0, "heads": 4, "heads_total": 12, "ffn": 512, "ffn_total": 1536}], out).suffix
        '.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = normalized_layers(layers)
    if not rows:
        raise ValueError("layers is empty: there is nothing to plot")
    labels = [str(row["layer"]) for row in rows]
    positions = list(range(len(rows)))

    figure = Figure(figsize=(max(4.0, 0.6 * len(rows) + 2.0), 5.0), dpi=100)
    FigureCanvasAgg(figure)  # attaches the Agg canvas, whatever the global backend is
    heads_axis, ffn_axis = figure.subplots(2, 1, sharex=True)
    for axis, key, title in (
        (heads_axis, "heads", "attention heads kept"),
        (ffn_axis, "ffn", "FFN width kept"),
    ):
        totals = [row[f"{key}_total"] for row in rows]
        if all(total is not None for total in totals):
            # The original width as a pale bar behind the kept one shows the pruned share at a glance.
            axis.bar(positions, totals, color="#d9d9d9", label="original")
        axis.bar(positions, [row[key] for row in rows], color="#1f77b4", label="kept")
        axis.set_ylabel(title)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))  # heads and channels are counts
        axis.grid(axis="y", alpha=0.3)
    # One legend above the plots: inside an axis it would hide the tallest bars.
    heads_axis.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize="small", frameon=False)
    ffn_axis.set_xticks(positions, labels)
    ffn_axis.set_xlabel("layer")
    figure.suptitle("Per-layer width after pruning")
    figure.tight_layout()

    target = Path(path)
    # No "Software" stamp: the same inputs give the same bytes, so re-pushing is a no-op commit.
    write_atomic(target, lambda handle: figure.savefig(handle, format="png", metadata={"Software": None}))
    logger.debug("wrote layer plot %s", target)
    return target
