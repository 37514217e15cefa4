"""Shipped recipes on a tiny stand-in: the same sections, the tiny model and data of conftest.py,
and a few training steps, so every recipe (and every README command) runs in the suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
STEPS = 4
# A teacher fine-tuned in the run learns the tiny task from the untrained base in this budget (the
# teacher gate wants it 5 points above the majority class).
TEACHER_FINETUNE = {"steps": 30, "lr": 3.0e-3, "batch_size": 16}


def stand_in(recipe: dict[str, Any], inputs: Path) -> dict[str, Any]:
    """``recipe`` with the model, data and training budget of ``inputs`` (make_tiny_run_inputs);
    every other section (pruner, ratios, quantizer, distiller, int8 mode, gates, card) kept. A recipe
    that fine-tunes its teacher starts, as it would, from a base model without head (``tiny-bert-base``)."""
    out = dict(recipe)
    model = "tiny-bert-base" if recipe.get("teacher") else "tiny-bert"
    out["model"] = {**(recipe.get("model") or {}), "id": str(inputs / model)}
    if recipe.get("teacher"):
        out["teacher"] = {**recipe["teacher"], "finetune": TEACHER_FINETUNE}
    data = dict(recipe.get("data") or {})
    if data:
        data.pop("dataset", None)
        data["files"] = {"train": str(inputs / "data/train.jsonl"), "validation": str(inputs / "data/validation.jsonl")}
        if data.get("distill_texts"):  # a built-in corpus is real English: the tiny tokenizer reads [UNK]s
            data["distill_texts"] = str(inputs / "data/train.jsonl")
        data.update(text_column="text", label_column="label", max_length=min(int(data.get("max_length", 16)), 16))
        out["data"] = data
    training = dict(recipe.get("training") or {})
    training.pop("epochs", None)
    training.update(steps=min(int(training.get("steps", STEPS)), STEPS), batch_size=16, device="cpu")
    out["training"] = training
    if recipe.get("pruning"):
        pruning = dict(recipe["pruning"])
        if pruning.get("schedule"):
            pruning["schedule"] = {**pruning["schedule"], "interval_steps": 1, "total_times": 2}
        if "training_steps" in (pruning.get("args") or {}):
            pruning["args"] = {**pruning["args"], "training_steps": 1}
        out["pruning"] = pruning
    out["card"] = {**(recipe.get("card") or {}), "base_model": "tester/tiny-bert"}
    return out


def write_stand_in(recipe_path: Path, inputs: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(stand_in(yaml.safe_load(recipe_path.read_text()), inputs), sort_keys=False))
    return target
