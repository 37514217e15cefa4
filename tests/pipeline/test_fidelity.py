"""Embedding fidelity on texts that are not the distillation data (report, gate, card), the text sets
behind it, and the embedding-level distillation losses in a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hubcompress.cli import app
from hubcompress.errors import RecipeError
from hubcompress.pipeline.text_sets import load_text_set
from hubcompress.recipe import parse_recipe

from .conftest import EMBED, write_recipe

FIDELITY_RUN = EMBED.replace(
    "distillation: {distiller: DynamicLayerwiseDistiller}\n",
    "distillation: {distiller: DynamicLayerwiseDistiller, embedding_loss: {cosine: 50.0, relational: 50.0}}\n",
).replace("  max_length: 16\n", "  max_length: 16\n  distill_texts: [distill.txt]\n") + (
    "validation: {fidelity_texts: [data/validation.jsonl], max_fidelity_texts: 30, min_similarity_spearman: 1.0}\n")


def test_built_in_text_sets_load_offline_and_do_not_overlap():
    dialogue, general = load_text_set("dialogue"), load_text_set("general")
    assert len(dialogue) == 1254 and all(t.strip() == t and t for t in dialogue.texts)
    assert len(dialogue.sample(400)) == 400 and dialogue.sample(400).texts == dialogue.sample(400).texts
    # general: BBC News train articles (1,783) and 6,000 of their sentences, 6,000 movie-review snippets
    assert len(general) == 1783 + 6000 + 6000
    assert not set(dialogue.texts) & set(general.texts)  # the fidelity set is never distillation text
    from hubcompress.pipeline.data import BUILTIN_DATASETS

    held_out = BUILTIN_DATASETS["bbcnews"]().splits["validation"].texts
    assert not set(held_out) & set(general.texts)  # the probe's split stays unseen


def test_a_run_reports_fidelity_and_the_gate_names_its_key(tiny_run: Path) -> None:
    (tiny_run / "distill.txt").write_text("the film was good\nthe plot was awful and poor\ngreat music\n" * 8)
    recipe = write_recipe(tiny_run, FIDELITY_RUN)
    out = tiny_run / "out"
    result = CliRunner().invoke(app, ["run", str(tiny_run / "tiny-bert"), "-r", str(recipe), "-o", str(out),
                                      "--no-progress"], catch_exceptions=False)
    report = json.loads((out / "report.json").read_text())
    assert report["eval"]["fidelity"] == {"id": "validation", "name": "validation.jsonl", "rows": 30, "top_k": 10,
                                          "in_training_texts": 0}
    student = report["quality"]["student"]
    assert 0 < student["similarity_spearman"] < 1.0 and 0 < student["top10_overlap"] <= 1.0
    assert "similarity_spearman" not in report["quality"]["teacher"]
    # The embedding losses are in the loss the student is trained on (heavily weighted here, so a loss
    # without them, the layerwise MSE alone, would be smaller than their sum).
    terms = report["compression"]["embedding_loss_last"]
    assert set(terms) == {"cosine", "relational"} and report["compression"]["loss_last"] >= sum(terms.values()) > 0
    # min_similarity_spearman 1.0 is above what the tiny run reaches: exit 1, every artifact named with the key.
    assert result.exit_code == 1, result.output
    reasons = report["gate"]["reasons"]
    assert {r.split(":")[0] for r in reasons if "validation.min_similarity_spearman 1" in r} == \
        {"student", "onnx_fp32", "onnx_int8"}
    check = report["gate"]["verdicts"]["onnx_int8"]["checks"]["similarity_spearman"]
    assert check["key"] == "validation.min_similarity_spearman" and not check["passed"]
    card = (out / "README.md").read_text()
    assert "| similarity_spearman | validation.jsonl (30 texts) | – |" in card
    assert "| top10_overlap | validation.jsonl (30 texts) |" in card
    assert "(30 texts, none of them distillation text)" in card
    assert "similarity spearman" in card.split("## Validation gate")[1].split("##")[0]


@pytest.mark.parametrize("text, message", [
    ("task: text-classification\nvalidation: {min_similarity_spearman: 0.8}\n",
     "validation.min_similarity_spearman: only for task feature-extraction"),
    ("task: text-classification\ndata: {dataset: bbcnews, distill_texts: general}\n"
     "distillation: {embedding_loss: {cosine: 1.0}}\n", "distillation.embedding_loss, data.distill_texts"),
    ("task: feature-extraction\ndistillation: {embedding_loss: {cosine: -1}}\ndata: {dataset: bbcnews}\n",
     "distillation.embedding_loss.cosine"),
])
def test_recipe_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text, "r.yaml")


def test_a_missing_fidelity_file_is_bad_input_at_its_key(tiny_run: Path) -> None:
    recipe = write_recipe(tiny_run, EMBED + "validation:\n  fidelity_texts: [dialogue, no/such.jsonl]\n")
    result = CliRunner().invoke(app, ["recipe", "check", str(recipe)])
    assert result.exit_code == 2
    assert "recipe.yaml:" in result.output and "validation.fidelity_texts[1]" in result.output
    assert "no/such.jsonl not found" in result.output and "dialogue" in result.output


def test_the_teacher_runs_once_per_step_for_both_kinds_of_loss() -> None:
    # The training step runs the teacher for the embeddings; the distiller's teacher_predict call that
    # follows (for the layerwise targets its hooks recorded) must not run it again.
    from transformers import BertConfig, BertModel

    from hubcompress.pipeline.embedding_distillation import EmbeddingDistillation
    from hubcompress.pooling import Pooling
    from hubcompress.recipe import EmbeddingLoss

    teacher = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, vocab_size=20)).eval()
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    losses = EmbeddingDistillation(EmbeddingLoss(relational=2.0), Pooling(), teacher)
    student = BertModel(teacher.config)
    batch = {"input_ids": torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0], [2, 9, 9, 3]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])}
    total = losses.training_step(batch, student)
    losses.teacher_predict(batch, teacher)  # what the distiller calls in its loss patch
    assert len(calls) == 1 and float(total.detach()) > 0 and set(losses.last) == {"relational"}
    losses.teacher_predict(dict(batch), teacher)  # another batch: the teacher runs again
    assert len(calls) == 2
    total.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
