"""Offline check of model card metadata.

`huggingface_hub.ModelCard.validate()` is not offline: in huggingface_hub 2.x it POSTs the card to
`{HF_ENDPOINT}/api/validate-yaml` and needs a reachable hub. A pipeline that writes a card long
before (or without) pushing it wants the mistakes the Hub would reject found at once, so this module
re-checks the same rules locally: the `model-index` fields the Hub requires, a well-formed
`base_model` and a known `base_model_relation`, and that the card parses back into the same
metadata through huggingface_hub's own parser. What it cannot check offline: that `base_model`
exists on the Hub and that `license` is on the Hub's list.
"""

from __future__ import annotations

from typing import Any

import yaml
from huggingface_hub import ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from model_cards.inputs import BASE_MODEL_RELATIONS


class CardValidationError(ValueError):
    """The card's metadata would be rejected by the Hub; the message lists every problem."""


def _require(problems: list[str], where: str, mapping: Any, key: str) -> Any:
    if not isinstance(mapping, dict) or mapping.get(key) in (None, ""):
        problems.append(f"{where}: missing {key!r}")
        return None
    return mapping[key]


def _check_model_index(problems: list[str], model_index: Any) -> None:
    if not isinstance(model_index, list) or not model_index:
        problems.append("model-index: must be a non-empty list")
        return
    for i, entry in enumerate(model_index):
        where = f"model-index[{i}]"
        _require(problems, where, entry, "name")
        results = _require(problems, where, entry, "results")
        if not isinstance(results, list):
            continue
        for j, result in enumerate(results):
            rwhere = f"{where}.results[{j}]"
            task = _require(problems, rwhere, result, "task")
            _require(problems, f"{rwhere}.task", task, "type")
            dataset = _require(problems, rwhere, result, "dataset")
            _require(problems, f"{rwhere}.dataset", dataset, "type")
            _require(problems, f"{rwhere}.dataset", dataset, "name")
            metrics = _require(problems, rwhere, result, "metrics")
            for k, metric in enumerate(metrics or []):
                _require(problems, f"{rwhere}.metrics[{k}]", metric, "type")
                _require(problems, f"{rwhere}.metrics[{k}]", metric, "value")


def _check_string_list(problems: list[str], key: str, value: Any) -> None:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        problems.append(f"{key}: must be a string or a list of non-empty strings, got {value!r}")


def metadata_problems(metadata: dict[str, Any]) -> list[str]:
    """Every problem the Hub would find in card metadata (empty when it is valid).

    Example:
        >>> metadata_problems({"base_model": "org/base", "base_model_relation": "pruned"})
        ["base_model_relation: 'pruned' is not one of adapter, merge, quantized, finetune"]
    """
    problems: list[str] = []
    if "model-index" in metadata:
        _check_model_index(problems, metadata["model-index"])
    base = metadata.get("base_model")
    if base is not None:
        _check_string_list(problems, "base_model", base)
        for repo_id in [base] if isinstance(base, str) else (base if isinstance(base, list) else []):
            try:
                validate_repo_id(repo_id)
            except (HFValidationError, TypeError) as error:
                problems.append(f"base_model: {repo_id!r} is not a hub repo id ({error})")
    relation = metadata.get("base_model_relation")
    if relation is not None:
        if relation not in BASE_MODEL_RELATIONS:
            problems.append(
                f"base_model_relation: {relation!r} is not one of {', '.join(BASE_MODEL_RELATIONS)}"
            )
        if base is None:
            problems.append("base_model_relation: set without base_model")
    for key in ("tags", "datasets", "metrics", "language"):
        if metadata.get(key) is not None:
            _check_string_list(problems, key, metadata[key])
    for key in ("license", "library_name", "pipeline_tag"):
        if metadata.get(key) is not None and not isinstance(metadata[key], str):
            problems.append(f"{key}: must be a string, got {metadata[key]!r}")
    return problems


def validate_card(card: ModelCard) -> None:
    """Check a card offline against the rules the Hub's metadata validation applies.

    Raises:
        CardValidationError: listing every problem found.

    Example:
        >>> from huggingface_hub import ModelCard
        >>> validate_card(ModelCard("---\\nbase_model: org/base\\nbase_model_relation: finetune\\n---\\n# x\\n"))
    """
    text = str(card)
    try:
        # huggingface_hub's own parser, strict: a malformed model-index raises here.
        reparsed = ModelCard(text, ignore_metadata_errors=False)
    except (ValueError, yaml.YAMLError) as error:
        raise CardValidationError(f"the card's metadata does not parse: {error}") from error
    metadata = reparsed.data.to_dict()
    problems = metadata_problems(metadata)
    if metadata != card.data.to_dict():
        problems.append("metadata changes when the card is written and read back")
    if problems:
        raise CardValidationError(
            "the model card metadata would be rejected by the Hub:\n- " + "\n- ".join(problems)
        )
