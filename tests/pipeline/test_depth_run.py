"""`hubcompress run` with ``pruning.drop_layers`` and width pruning on a tiny classifier, killed
after compress and resumed: the layers stay dropped, and report.json, the manifest, config.json
and the card say which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubcompress.pipeline import STAGES, open_run, run_stages

from .conftest import write_recipe

MIXED = """\
task: text-classification
data:
  files: {train: data/train.jsonl, validation: data/validation.jsonl}
  max_length: 16
pruning: {pruner: L1NormPruner, heads: 0.5, drop_layers: 0.5}
distillation: {distiller: DynamicLayerwiseDistiller}
training: {steps: 3, lr: 1.0e-3, batch_size: 16, device: cpu}
export: {int8: none}
card: {base_model: tester/tiny-bert, license: apache-2.0}
"""


def test_mixed_run_resumes_with_the_same_layers_and_reports_them(tiny_run: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from hubcompress.pipeline import runner

    recipe, out = write_recipe(tiny_run, MIXED), tiny_run / "out"

    def dies(ctx):
        raise RuntimeError("killed during speedup")

    monkeypatch.setattr(runner, "STAGES", [s if s.name != "speedup" else runner.Stage("speedup", dies) for s in STAGES])
    with pytest.raises(RuntimeError, match="killed"):
        run_stages(open_run(str(tiny_run / "tiny-bert"), recipe, out, progress=False))
    monkeypatch.undo()
    result = run_stages(open_run(str(tiny_run / "tiny-bert"), recipe, out, progress=False))
    # speedup reloads the compressed weights into a 1-layer model
    assert "compress" in result.skipped and "speedup" in result.ran
    depth = json.loads((out / "report.json").read_text())["compression"]["depth"]
    assert depth["layers_before"] == 2 and len(depth["dropped"]) == 1 and depth["chosen_by"] == "block influence"
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((out / "hubcompress.json").read_text())["depth"] == depth
    card = (out / "README.md").read_text()
    assert "## Layers dropped" in card and f"Dropped 1 of 2 transformer layers: {depth['dropped'][0]}" in card
    assert (out / "onnx/model.onnx").exists()
