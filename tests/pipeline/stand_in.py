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


# task -> the tiny language model standing in for the recipe's (tests/pipeline/lm_models.py)
LANGUAGE_MODELS = {"fill-mask": ("tiny-mlm", "save_mlm"), "text-generation": ("tiny-gpt2", "save_causal")}


def _language_model_inputs(inputs: Path, name: str, save: str) -> str:
    import json

    from . import lm_models

    if not (inputs / name).exists():
        getattr(lm_models, save)(inputs / name)
    if not (inputs / "texts").exists():
        (inputs / "texts").mkdir()
        for split, n, seed in (("train", 96, 0), ("validation", 32, 1)):
            (inputs / "texts" / f"{split}.jsonl").write_text(
                "".join(json.dumps({"text": t}) + "\n" for t in lm_models.cycle_texts(n, seed)))
    return name


# task -> the tiny model of tests/pipeline/token_tasks.py, its data files' prefix, and the data keys it needs
TOKEN_TASKS = {"token-classification": ("tiny-ner", "ner", {"tokens_column": "words", "tags_column": "tags"}),
               "question-answering": ("tiny-qa", "squad", {"max_length": 32, "doc_stride": 8})}


def _token_task_inputs(inputs: Path, name: str) -> str:
    from .token_tasks import make_token_task_inputs

    if not (inputs / name).exists():
        make_token_task_inputs(inputs)
    return name


def _image_inputs(inputs: Path, teacher: bool) -> str:
    from .image_models import make_vit_inputs

    if not (inputs / "tiny-vit").exists():
        make_vit_inputs(inputs)
    return "tiny-vit-base" if teacher else "tiny-vit"


def stand_in(recipe: dict[str, Any], inputs: Path) -> dict[str, Any]:
    """``recipe`` with the model, data and training budget of ``inputs`` (make_tiny_run_inputs);
    every other section (pruner, ratios, quantizer, distiller, int8 mode, gates, card) kept. A recipe
    that fine-tunes its teacher starts, as it would, from a base model without head (``tiny-bert-base``)."""
    out = dict(recipe)
    model = "tiny-bert-base" if recipe.get("teacher") else "tiny-bert"
    language_model = LANGUAGE_MODELS.get(recipe.get("task"))
    if language_model is not None:  # a masked or causal LM, and texts its tokenizer reads
        model = _language_model_inputs(inputs, *language_model)
    token_task = TOKEN_TASKS.get(recipe.get("task"))
    if token_task is not None:  # words and tags, or SQuAD rows, and the tiny model trained on them
        model = _token_task_inputs(inputs, token_task[0])
    images = recipe.get("task") == "image-classification"
    if images:  # a tiny ViT and folders of red and blue squares
        model = _image_inputs(inputs, bool(recipe.get("teacher")))
    out["model"] = {**(recipe.get("model") or {}), "id": str(inputs / model)}
    if recipe.get("teacher"):
        out["teacher"] = {**recipe["teacher"], "finetune": TEACHER_FINETUNE}
    data = dict(recipe.get("data") or {})
    if data:
        data.pop("dataset", None)
        folder = "texts" if language_model is not None else "data"
        data["files"] = {"train": str(inputs / f"{folder}/train.jsonl"),
                         "validation": str(inputs / f"{folder}/validation.jsonl")}
        if data.get("distill_texts"):  # a built-in corpus is real English: the tiny tokenizer reads [UNK]s
            data["distill_texts"] = str(inputs / "data/train.jsonl")
        data.update(text_column="text", label_column="label", max_length=min(int(data.get("max_length", 16)), 16))
        if token_task is not None:
            data.update(files={split: str(inputs / f"data/{token_task[1]}_{split}.jsonl")
                               for split in ("train", "validation")}, **token_task[2])
        if images:
            data.update(files={split: str(inputs / f"images/{split}") for split in ("train", "validation")},
                        image_column="image", label_column="label")
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
        if isinstance(pruning.get("drop_layers"), int):  # a count of a 6-layer model's layers: the stand-in has 2
            pruning["drop_layers"] = 1
        out["pruning"] = pruning
    out["card"] = {**(recipe.get("card") or {}), "base_model": "tester/tiny-bert"}
    return out


def write_stand_in(recipe_path: Path, inputs: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(stand_in(yaml.safe_load(recipe_path.read_text()), inputs), sort_keys=False))
    return target
