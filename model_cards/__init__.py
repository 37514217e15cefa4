"""Model cards for compressed models: Hub metadata, a Markdown body from a template, and plots.

A leaf package: it never imports `hubcompress` and takes plain data (`CardInputs`).

Example:
    >>> from model_cards import CardInputs, build_card
    >>> card = build_card(CardInputs(repo_id="me/small", base_model="org/base", int8=True))
    >>> card.data.base_model_relation
    'quantized'
"""

from __future__ import annotations

from model_cards.card import build_card, build_card_data, write_card
from model_cards.inputs import BASE_MODEL_RELATIONS, CardInputs, Metric
from model_cards.plots import plot_layer_widths
from model_cards.validate import CardValidationError, metadata_problems, validate_card

__all__ = [
    "BASE_MODEL_RELATIONS",
    "CardInputs",
    "CardValidationError",
    "Metric",
    "build_card",
    "build_card_data",
    "metadata_problems",
    "plot_layer_widths",
    "validate_card",
    "write_card",
]
