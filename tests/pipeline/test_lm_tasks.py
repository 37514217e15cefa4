"""fill-mask and text-generation end to end on tiny models (run -> export -> validate -> card), their
batches, rows, gate and recipe rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hubcompress.errors import RecipeError
from hubcompress.pipeline import run_pipeline
from hubcompress.pipeline.lm_batches import IGNORE, CausalEncoded, MaskedEncoded
from hubcompress.pipeline.tasks import TASKS
from hubcompress.pipeline.tasks.lm_rows import lm_parity, target_rows
from hubcompress.pipeline.validate import gate
from hubcompress.recipe import parse_recipe

from .lm_models import (
    FILL_MASK_RECIPE,
    GENERATION_RECIPE,
    bert_tokenizer,
    cycle_texts,
    gpt2_tokenizer,
    make_lm_run_inputs,
)
from .. import transformers_js
from .conftest import write_recipe

ARTIFACTS = {"teacher", "student", "onnx_fp32", "onnx_int8"}


@pytest.fixture(scope="module")
def _lm_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lm_run_inputs(tmp_path_factory.mktemp("lm-run"))


@pytest.fixture
def lm_run(_lm_inputs: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(_lm_inputs, tmp_path / "inputs"))


def _run(root: Path, model: str, recipe: str) -> tuple[Path, dict]:
    out = root / "out"
    result = run_pipeline(str(root / model), write_recipe(root, recipe), out, progress=False)
    assert result.exit_code == 0, result
    return out, json.loads((out / "report.json").read_text())


def _run_card_snippet(out: Path, task: str, call: str, **kwargs: object) -> object:
    """The card's transformers snippet, run on the output folder instead of the hub repo."""
    card = (out / "README.md").read_text()
    assert f"pipeline_tag: {task}" in card and f'pipeline("{task}", model="tester/out' not in card
    assert f'pipeline("{task}", model=' in card
    from transformers import pipeline

    return pipeline(task, model=str(out), trust_remote_code=True, device="cpu")(call, **kwargs)


def test_fill_mask_run_prunes_distils_exports_and_validates(lm_run: Path) -> None:
    out, report = _run(lm_run, "tiny-mlm", FILL_MASK_RECIPE)
    quality = report["quality"]
    assert set(quality) == ARTIFACTS
    teacher, student, int8 = quality["teacher"], quality["student"], quality["onnx_int8"]
    assert teacher["accuracy"] > 0.2 and teacher["top5_accuracy"] > 0.5  # chance: 1 in 12 words
    assert "agreement_with_teacher" not in teacher and student["top1_in_teacher_top5"] > 0.5
    assert {"accuracy", "top5_accuracy", "perplexity", "agreement_with_teacher"} <= set(int8)
    assert report["speedup"]["params_after"] < report["compression"]["params_before"]
    parity = report["parity_to_pytorch_student"]
    assert parity["onnx_fp32"]["masked_token_top5"]["max_abs_diff"] < 1e-3
    assert parity["onnx_int8"]["argmax_agreement"] > 0.8
    verdicts = report["gate"]["verdicts"]
    assert report["gate"]["passed"] and verdicts["student"]["checks"]["accuracy_drop_points"]["max"] == 60
    assert report["consumers"]["passed"], report["consumers"]
    fillers = _run_card_snippet(out, "fill-mask", "north east [MASK] west")
    assert len(fillers) == 5 and {"token_str", "score", "sequence"} <= set(fillers[0])
    assert "unmasker.tokenizer.mask_token" in (out / "README.md").read_text()
    transformers_js.check(out, tmp=out.parent)  # transformers.js's five best fillers are onnxruntime's


def test_text_generation_run_pads_with_eos_and_reports_perplexity(lm_run: Path) -> None:
    out, report = _run(lm_run, "tiny-gpt2", GENERATION_RECIPE)
    quality = report["quality"]
    assert set(quality) == ARTIFACTS
    assert quality["teacher"]["next_token_accuracy"] > 0.9 and quality["teacher"]["perplexity"] < 2
    assert quality["onnx_int8"]["agreement_with_teacher"] > 0.8 and quality["onnx_int8"]["perplexity"] < 3
    assert report["parity_to_pytorch_student"]["onnx_fp32"]["next_token_top5"]["max_abs_diff"] < 1e-3
    checks = report["gate"]["verdicts"]["onnx_int8"]["checks"]
    assert report["gate"]["passed"] and {"next_token_accuracy_drop_points", "agreement_with_fp32_student"} <= set(checks)
    assert report["consumers"]["passed"], report["consumers"]
    # GPT-2 has no pad token: the run pads with end-of-text, and the published folder says so.
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == 0
    assert json.loads((out / "tokenizer_config.json").read_text())["pad_token"] == "<|endoftext|>"
    generated = _run_card_snippet(out, "text-generation", "north east", max_new_tokens=3, do_sample=False)
    # (the tiny word-level tokenizer has no decoder, so the pipeline glues the continuation on without a space)
    assert generated[0]["generated_text"].replace(" ", "").startswith("northeastsouth")


def test_masked_batches_are_seeded_and_mask_every_eval_text(tmp_path: Path) -> None:
    tokenizer = bert_tokenizer(tmp_path)
    data = MaskedEncoded(tokenizer, cycle_texts(64, 0), max_length=16)
    first = next(data.train_batches(64, seed=3, with_labels=False))
    again = next(MaskedEncoded(tokenizer, cycle_texts(64, 0), max_length=16).train_batches(64, seed=3,
                                                                                          with_labels=False))
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    targets = first["labels"] != IGNORE
    share = targets.sum() / (first["attention_mask"].sum() - 2 * 64)
    assert 0.08 < share < 0.25  # about 15% of the words, never [CLS] / [SEP] / padding
    assert (first["input_ids"][targets] == tokenizer.mask_token_id).float().mean() > 0.6  # 80% [MASK]
    assert all(len(positions) >= 1 for positions, _ in data.eval_targets)
    _, batch = next(data.eval_batches(64))
    assert int((batch["input_ids"] == tokenizer.mask_token_id).sum()) == sum(len(p) for p, _ in data.eval_targets)


def test_causal_batches_label_tokens_and_ignore_padding() -> None:
    tokenizer = gpt2_tokenizer()
    with pytest.raises(Exception, match="pad"):
        CausalEncoded(gpt2_tokenizer().__class__(tokenizer_object=tokenizer.backend_tokenizer), ["one"])
    tokenizer.pad_token = tokenizer.eos_token
    batch = next(CausalEncoded(tokenizer, ["one two three", "cat"], max_length=8).train_batches(2, 0, with_labels=False))
    assert (batch["labels"] == IGNORE).sum() == 2 and (batch["labels"][batch["attention_mask"] == 1] >= 0).all()


def test_rows_keep_the_top5_and_parity_reads_their_logits() -> None:
    logits = np.array([[0.0, 3.0, 2.0, 1.0, -1.0, -2.0, -3.0]])
    row = target_rows(logits, np.array([2]))
    assert row.shape == (1, 12) and row[0, 2:7].tolist() == [1, 2, 3, 0, 4]
    close = target_rows(logits + 1e-4, np.array([2]))
    found = lm_parity([row], [close], "rows")
    assert found["argmax_agreement"] == 1.0 and found["rows"]["max_abs_diff"] == pytest.approx(1e-4, abs=1e-6)


def test_the_gate_holds_masked_accuracy_to_the_teacher() -> None:
    recipe = parse_recipe(FILL_MASK_RECIPE.replace("max_metric_drop: 60", "max_metric_drop: 5"))
    ctx = SimpleNamespace(recipe=recipe, task=TASKS["fill-mask"])
    result = gate(ctx, {"teacher": {"accuracy": 0.5}, "student": {"accuracy": 0.4}}, {})
    assert not result["passed"] and result["reasons"] == ["student: accuracy drop points 10 > validation.max_metric_drop 5.0"]


def test_recipes_take_plain_texts_and_refuse_hidden_pruning_of_a_tied_mlm_head() -> None:
    for recipe in (FILL_MASK_RECIPE, GENERATION_RECIPE):
        assert parse_recipe(recipe.replace("max_length: 16", "max_length: 16\n  distill_texts: general")).data.distill_texts
    with pytest.raises(RecipeError, match="pruning.hidden: fill-mask models tie"):
        parse_recipe(FILL_MASK_RECIPE.replace("ffn: 0.5,", "ffn: 0.5, hidden: 0.25,"))
    parse_recipe(GENERATION_RECIPE.replace("ffn: 0.5,", "ffn: 0.5, hidden: 0.25,"))  # GPT-2's tied head narrows
