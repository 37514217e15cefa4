"""Recipe schema: the shipped recipes pass; every mistake names the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hubcompress.cli import app
from hubcompress.recipe import STARTER, RecipeError, load_recipe, parse_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    recipe = load_recipe(path)
    from hubcompress.pipeline.tasks import TASKS

    assert recipe.task in TASKS


def test_the_four_recipes_exist():
    assert {p.name for p in RECIPES} >= {"minilm-embed.yaml", "bert-classify.yaml", "int8-only.yaml",
                                         "prune-only.yaml"}


def test_the_starter_is_a_valid_recipe():
    assert parse_recipe(STARTER).pruning.schedule.kind == "agp"


def error(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    return str(info.value)


def test_unknown_key_names_file_line_and_the_closest_key():
    msg = error("task: feature-extraction\nexport:\n  onnx: true\n  int_8: dynamic\n")
    assert msg.startswith("r.yaml:4: export.int_8: unknown key; did you mean 'int8'?")


def test_wrong_values_are_located():
    msg = error("task: feature-extraction\ntraining:\n  lr: fast\n")
    assert "r.yaml:3: training.lr:" in msg
    msg = error("task: summarise\n")
    assert "r.yaml:1: task:" in msg and "feature-extraction" in msg
    msg = error("task: feature-extraction\npruning:\n  pruner: L1Pruner\n  heads: 0.5\n")
    assert "r.yaml:3: pruning.pruner:" in msg and "did you mean 'L1NormPruner'" in msg
    msg = error("task: feature-extraction\npruning:\n  heads: 1.5\n")
    assert "pruning.heads" in msg


def test_incoherent_recipes():
    assert "prunes nothing" in error("task: feature-extraction\npruning: {pruner: L1NormPruner}\n")
    assert "add a 'data' section" in error("task: feature-extraction\ndistillation: {}\n")
    assert "add a 'data' section" in error("task: text-classification\npruning: {pruner: TaylorPruner, heads: 0.5}\n")
    assert "validation gates" in error("task: feature-extraction\nvalidation: {min_cosine: 0.9}\n")
    no_loss = error("task: feature-extraction\ndata: {dataset: bbcnews}\nquantization: {}\n")
    assert "no task loss" in no_loss and "distillation" in no_loss
    assert "not both" in error("task: feature-extraction\ntraining: {steps: 10, epochs: 1}\n")
    assert "qat needs" in error("task: feature-extraction\nexport: {int8: qat}\n")


def test_not_yaml_or_not_a_mapping():
    assert error("task: [unclosed\n").startswith("r.yaml:")
    assert "mapping of sections" in error("- just a list\n")
    with pytest.raises(RecipeError, match="recipe init"):
        load_recipe("/nonexistent/recipe.yaml")


def test_cli_recipe_check_and_init(tmp_path):
    runner = CliRunner()
    starter = tmp_path / "recipe.yaml"
    result = runner.invoke(app, ["recipe", "init", "--out", str(starter)])
    assert result.exit_code == 0 and yaml.safe_load(starter.read_text())["task"] == "feature-extraction"
    missing = runner.invoke(app, ["recipe", "check", str(starter)])  # it names data files not written yet
    assert missing.exit_code == 2 and f"{starter}:7: data.files.train:" in missing.output, missing.output
    (tmp_path / "data").mkdir()
    for split in ("train", "validation"):
        (tmp_path / "data" / f"{split}.jsonl").write_text('{"text": "a"}\n')
    result = runner.invoke(app, ["recipe", "check", str(starter)])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: feature-extraction\nspeedup: {enable: true}\n")
    result = runner.invoke(app, ["recipe", "check", str(bad)])
    assert result.exit_code == 2 and "speedup.enable" in result.output and "bad.yaml:2" in result.output
    assert runner.invoke(app, ["recipe", "init", "--out", str(starter)]).exit_code == 2  # never overwrites


def test_a_teacher_section_asks_for_the_tasks_own_label_key():
    teacher = "teacher: {finetune: {epochs: 1}}\n"
    msg = error("task: text-classification\ndata: {dataset: bbcnews, label_column: null}\n" + teacher)
    assert "teacher.finetune trains on labelled data" in msg and "data.label_column" in msg
    # Word tags and answer spans are named by their own keys: label_column does not matter there.
    ner = parse_recipe("task: token-classification\ndata: {files: {train: t.jsonl, validation: v.jsonl}, "
                       "label_column: null, tags_column: tags}\n" + teacher)
    assert ner.teacher is not None
    squad = parse_recipe("task: question-answering\ndata: {files: {train: t.jsonl, validation: v.jsonl}, "
                         "label_column: null}\n" + teacher)
    assert squad.teacher is not None
