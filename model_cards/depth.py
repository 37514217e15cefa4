"""The card's "Layers dropped" section: which transformer layers depth pruning removed, and how
they were chosen (the recipe's list, or their measured importance).

Example:
    >>> depth_lines({"layers_before": 6, "dropped": [1, 4], "kept": [0, 2, 3, 5], "chosen_by": "recipe"})[0]
    'Dropped 2 of 6 transformer layers: 1, 4 (original indices, counted from 0), as the recipe lists them.'
"""

from __future__ import annotations

from typing import Any


def depth_lines(depth: dict[str, Any] | None) -> list[str]:
    """Sentences for the card from a depth summary (``{"layers_before", "dropped", "kept",
    "chosen_by"}`` and, when measured, ``"scores"`` (one per original layer) and ``"method"``);
    empty when no layer was dropped."""
    if not depth:
        return []
    dropped, kept = depth["dropped"], depth["kept"]
    how = "as the recipe lists them" if depth["chosen_by"] == "recipe" else \
        f"the least important by {depth.get('method') or depth['chosen_by']}"
    lines = [f"Dropped {len(dropped)} of {depth['layers_before']} transformer layers: "
             f"{', '.join(map(str, dropped))} (original indices, counted from 0), {how}."]
    lines.append("Kept layers, renumbered from 0: " + ", ".join(f"{new} ← {old}" for new, old in enumerate(kept))
                 + f" (new ← original); config.json states the {len(kept)} layers kept.")
    scores = depth.get("scores")
    if scores:
        lines.append("Importance per original layer: " + ", ".join(f"{i}: {s:.4f}" for i, s in enumerate(scores))
                     + ".")
    return lines
