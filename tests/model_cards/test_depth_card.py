"""The card says which layers depth pruning dropped, how they were chosen, and the kept mapping."""

from __future__ import annotations

from model_cards import CardInputs
from model_cards.card import build_card


def test_card_lists_dropped_layers_and_their_importance() -> None:
    depth = {"layers_before": 6, "dropped": [1, 4, 5], "kept": [0, 2, 3], "chosen_by": "block influence",
             "method": "block influence: 1 - cos(layer input, layer output)", "scores": [0.3, 0.01, 0.2, 0.1, 0.02, 0.03]}
    text = str(build_card(CardInputs(repo_id="me/small", base_model="org/base", depth=depth)))
    assert "## Layers dropped" in text
    assert "Dropped 3 of 6 transformer layers: 1, 4, 5" in text and "least important by block influence" in text
    assert "0 ← 0, 1 ← 2, 2 ← 3" in text and "1: 0.0100" in text
    assert "## Layers dropped" not in str(build_card(CardInputs(repo_id="me/small", base_model="org/base")))
