"""`hubcompress run` end to end on a tiny model: the output folder contract, resume, the gate,
the redo commands and the exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hubcompress import from_pretrained
from hubcompress.cli import app
from hubcompress.pipeline import STAGES, open_run, run_stages

from .conftest import CLASSIFY, EMBED, write_recipe

CONTRACT = ["config.json", "model.safetensors", "hubcompress.json", "tokenizer.json", "tokenizer_config.json",
            "recipe.yaml", "onnx/model.onnx", "onnx/model_quantized.onnx", "onnx/model_int8.onnx", "report.json",
            "README.md", "assets/layer_widths.png"]


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".saving-")]


def test_classification_run_writes_the_whole_folder(tiny_run: Path) -> None:
    out = tiny_run / "out"
    result = cli("run", str(tiny_run / "tiny-bert"), "--recipe", str(write_recipe(tiny_run, CLASSIFY)),
                 "--output", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    for name in CONTRACT:
        assert (out / name).is_file(), name
    assert not leftovers(out)
    umask = os.umask(0)
    os.umask(umask)
    for name in CONTRACT:  # published files are readable like any other (mkstemp alone gives 0600)
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    report = json.loads((out / "report.json").read_text())
    assert report["speedup"]["applied"] and report["speedup"]["params_after"] < report["compression"]["params_before"]
    assert report["compression"]["steps"] == 8
    quality = report["quality"]
    assert set(quality) == {"teacher", "student", "onnx_fp32", "onnx_int8"}
    assert 0 <= quality["student"]["accuracy"] <= 1 and "agreement_with_teacher" in quality["onnx_int8"]
    assert report["parity_to_pytorch_student"]["onnx_fp32"]["argmax_agreement"] == 1.0
    assert report["gate"]["passed"] and report["gate"]["reasons"] == []
    # one verdict per artifact, each check with its value and bound; int8 judged by agreement, not by atol
    verdicts = report["gate"]["verdicts"]
    assert set(verdicts) == {"student", "onnx_fp32", "onnx_int8"} and all(v["passed"] for v in verdicts.values())
    assert set(verdicts["onnx_int8"]["checks"]) == {"agreement_with_fp32_student"}
    assert verdicts["onnx_fp32"]["checks"]["max_abs_diff_to_pytorch"]["max"] == 1e-3
    assert "passed" not in report["export"]["int8"]["validation"]
    assert "## Validation gate" in (out / "README.md").read_text()
    assert set(report["latency_ms"]["batch8"]) == {"teacher", "student", "onnx_fp32", "onnx_int8"}
    # The reloaded checkpoint is the pruned model, and the ONNX file computes what it computes.
    model = from_pretrained(out)
    assert [m.out_features for n, m in model.named_modules() if n.endswith("attention.self.query")] == [16, 16]
    import onnxruntime as ort
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(out)(["good film", "the plot was awful and poor"], padding=True,
                                               return_tensors="np")
    session = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {i.name: batch[i.name] for i in session.get_inputs()})
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    card = (out / "README.md").read_text()
    assert "base_model: tester/tiny-bert" in card and "AutoModelForSequenceClassification.from_pretrained(" in card
    assert "| 0 |" in card  # the per-layer table
    assert "student" in result.output and "onnx_int8" in result.output  # the closing table


def test_rerun_skips_finished_stages_and_resumes_after_a_failure(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_recipe(tiny_run, EMBED)
    out = tiny_run / "out"

    def dies(ctx):
        (ctx.output / "onnx").mkdir(exist_ok=True)
        raise RuntimeError("killed during export")

    from hubcompress.pipeline import runner

    monkeypatch.setattr(runner, "STAGES", [s if s.name != "export" else runner.Stage("export", dies) for s in STAGES])
    ctx = open_run(str(tiny_run / "tiny-bert"), recipe, out, progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        run_stages(ctx)
    state = json.loads((out / ".hubcompress/state.json").read_text())
    assert set(state["stages"]) == {"compress", "speedup"}
    weights = (out / "model.safetensors").read_bytes()
    monkeypatch.undo()

    result = run_stages(open_run(str(tiny_run / "tiny-bert"), recipe, out, progress=False))
    assert result.skipped == ["compress", "speedup"]
    assert result.ran == ["export", "validate", "card"]
    assert (out / "model.safetensors").read_bytes() == weights
    again = run_stages(open_run(str(tiny_run / "tiny-bert"), recipe, out, progress=False))
    assert again.ran == [] and again.skipped == ["compress", "speedup", "export", "validate", "card"]
    assert not leftovers(out)


def test_a_changed_recipe_does_not_mix_with_an_old_run(tiny_run: Path) -> None:
    out = tiny_run / "out"
    first = write_recipe(tiny_run, EMBED.replace("distillation: {distiller: DynamicLayerwiseDistiller}\n", "")
                         .replace("training: {steps: 4, batch_size: 16, device: cpu}\n", "")
                         + "validation: {min_cosine: 0.0}\n")
    assert cli("run", str(tiny_run / "tiny-bert"), "-r", str(first), "-o", str(out), "--no-progress").exit_code == 0
    changed = write_recipe(tiny_run, first.read_text().replace("heads: 0.5", "heads: 0.25"), "changed.yaml")
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(changed), "-o", str(out), "--no-progress")
    assert result.exit_code == 2 and "--fresh" in result.output
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(changed), "-o", str(out), "--no-progress", "--fresh")
    assert result.exit_code == 0, result.output


def test_the_gate_fails_with_exit_code_1_and_keeps_the_artifacts(tiny_run: Path) -> None:
    recipe = write_recipe(tiny_run, EMBED + "validation: {min_cosine: 0.99999, max_metric_drop: 0.0}\n")
    out = tiny_run / "out"
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(recipe), "-o", str(out), "--no-progress",
                 "--push-to-hub", "tester/never-pushed")
    assert result.exit_code == 1, result.output
    assert "gate" in result.output and "nothing was pushed" in result.output
    report = json.loads((out / "report.json").read_text())
    assert not report["gate"]["passed"] and report["push"] is None
    assert any("min_cosine" in r for r in report["gate"]["reasons"])
    assert (out / "onnx/model_quantized.onnx").exists() and (out / "README.md").exists()
    # `hubcompress push` refuses the folder too, unless forced.
    assert cli("push", str(out), "tester/never-pushed").exit_code == 1


def test_validate_and_card_commands_redo_their_stages(tiny_run: Path) -> None:
    recipe = write_recipe(tiny_run, EMBED)
    out = tiny_run / "out"
    assert cli("run", str(tiny_run / "tiny-bert"), "-r", str(recipe), "-o", str(out), "--no-progress").exit_code == 0
    before = json.loads((out / ".hubcompress/state.json").read_text())["stages"]
    (out / "README.md").unlink()
    assert cli("card", str(out)).exit_code == 0 and (out / "README.md").exists()
    result = cli("validate", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    after = json.loads((out / ".hubcompress/state.json").read_text())["stages"]
    assert after["compress"] == before["compress"] and after["validate"]["finished_at"] >= before["validate"]["finished_at"]
    assert not (out / ".hubcompress/compressed/model.safetensors").exists()  # the checkpoint holds the weights
    result = cli("export", str(out), "--no-progress")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, message", [
    (["run", "/no/such/folder", "-r", "RECIPE"], "no such folder"),
    (["run", "MODEL", "-r", "/no/such/recipe.yaml"], "no such recipe file"),
    (["validate", "/tmp"], "no recipe.yaml"),
])
def test_bad_input_exits_2_with_a_message(tiny_run: Path, args: list[str], message: str) -> None:
    recipe = write_recipe(tiny_run, EMBED)
    args = [a.replace("RECIPE", str(recipe)).replace("MODEL", str(tiny_run / "tiny-bert")) for a in args]
    result = cli(*args, "-o", str(tiny_run / "out")) if args[0] == "run" else cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_static_and_qat_int8_exports(tiny_run: Path) -> None:
    static = write_recipe(tiny_run, CLASSIFY.replace("int8: dynamic", "int8: static"), "static.yaml")
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(static), "-o", str(tiny_run / "s"), "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((tiny_run / "s/report.json").read_text())
    assert report["export"]["int8"]["quantization"]["quantized_op_counts"]["QuantizeLinear"] > 0
    qat = write_recipe(tiny_run, CLASSIFY.replace("int8: dynamic", "int8: qat")
                       + "quantization: {quantizer: QATQuantizer, config_list: [{op_types: [Linear], "
                         "target_names: [_input_, weight], quant_dtype: int8}]}\n", "qat.yaml")
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(qat), "-o", str(tiny_run / "q"), "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((tiny_run / "q/report.json").read_text())
    assert report["compression"]["quantized_modules"] > 0
    # Redone later, from the saved calibration alone (the full-size weights are gone by then).
    result = cli("export", str(tiny_run / "q"), "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads((tiny_run / "q/report.json").read_text())
    assert report["export"]["int8"]["mode"] == "qat"
    targets = report["export"]["int8"]["quantization"]["quantized_targets"]
    assert any(t.endswith("_input_") for t in targets) and any(t.endswith("weight") for t in targets)
    assert report["parity_to_pytorch_student"]["onnx_int8"]["argmax_agreement"] >= 0.9


def test_a_killed_run_leaves_no_partial_file_and_the_rerun_finishes(tiny_run: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    recipe = write_recipe(tiny_run, EMBED.replace("steps: 4", "steps: 100000"))
    out = tiny_run / "out"
    command = [sys.executable, "-m", "hubcompress.cli", "run", str(tiny_run / "tiny-bert"), "-r", str(recipe),
               "-o", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while not (out / "recipe.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # well into the training loop
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not leftovers(out)
    assert not (out / "model.safetensors").exists()
    state = out / ".hubcompress/state.json"
    assert not state.exists() or json.loads(state.read_text())["stages"] == {}

    fast = write_recipe(tiny_run, EMBED, "fast.yaml")
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(fast), "-o", str(out), "--no-progress", "--fresh")
    assert result.exit_code == 0, result.output
    assert not leftovers(out)
