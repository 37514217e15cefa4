"""Every recipe in recipes/ runs end to end on a tiny stand-in with the same sections (a new recipe
is covered by adding it to the folder); the full-size runs are in benchmarks/ (RESULTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubcompress.cli import app

from .conftest import make_tiny_run_inputs
from .stand_in import RECIPES, write_stand_in


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_runs_on_a_tiny_stand_in(recipe: Path, tmp_path: Path) -> None:
    inputs = make_tiny_run_inputs(tmp_path / "inputs")
    path = write_stand_in(recipe, inputs, tmp_path / recipe.name)
    runner = CliRunner()
    check = runner.invoke(app, ["recipe", "check", str(path)], catch_exceptions=False)
    assert check.exit_code == 0, check.output
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "-r", str(path), "-o", str(out), "--no-progress"], catch_exceptions=False)
    # A random tiny model may miss a recipe's quality bounds (exit 1, the gate); it must never crash.
    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["stage_seconds"]) >= {"compress", "speedup", "export", "validate", "card"}
    assert report["consumers"]["passed"], report["consumers"]  # texts, or images for an image model
    for name, verdict in report["gate"]["verdicts"].items():
        for check_name, values in verdict["checks"].items():  # every bound the recipe sets was measured
            assert values["value"] is not None, (name, check_name)
    if result.exit_code == 1:
        assert report["gate"]["reasons"] and "nothing was pushed" in result.output
    int8 = report["export"].get("int8")
    assert (out / "onnx/model_quantized.onnx").exists() == (int8 is not None)
    assert (out / "README.md").exists() and (out / "recipe.yaml").exists()
