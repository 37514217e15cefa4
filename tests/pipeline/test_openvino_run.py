"""`export.openvino` end to end on a tiny model: the IR files, their checks in the validate stage (quality,
parity, verdicts, latencies at batch 1 and 8), the card's OpenVINO snippet run as written, and
`hubcompress export --openvino` on a folder that was run without it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'hubcompress[openvino]'")
pytest.importorskip("nncf", reason="the openvino extra is not installed: pip install 'hubcompress[openvino]'")

from exporters.openvino import OPENVINO_FILE_PATTERNS, OPENVINO_FP32, OPENVINO_INT8  # noqa: E402
from hubcompress.cli import app  # noqa: E402
from hubcompress.serving import ServerSettings, load_served_model  # noqa: E402
from hubcompress.serving.artifacts import choose_artifact  # noqa: E402

from .conftest import CLASSIFY, EMBED, write_recipe  # noqa: E402

OPENVINO_ARTIFACTS = ("openvino_fp32", "openvino_int8")


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _python_block(card: str, heading: str) -> str:
    match = re.search(rf"^### {re.escape(heading)}\n.*?```python\n(.*?)```", card, flags=re.S | re.M)
    assert match, f"no {heading} snippet in the card"
    return match.group(1)


def test_embedding_run_exports_validates_and_documents_openvino(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_recipe(tiny_run, EMBED.replace("export: {int8: dynamic}", "export: {int8: dynamic, openvino: int8}"))
    out = tiny_run / "out"
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(recipe), "-o", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert all((out / name).is_file() for name in OPENVINO_FILE_PATTERNS)
    assert "openvino_int8" in result.output  # the closing table
    report = json.loads((out / "report.json").read_text())

    exported = report["export"]["openvino"]
    assert exported["fp32"]["path"] == OPENVINO_FP32 and exported["fp32"]["validation"]["passed"]
    assert exported["fp32"]["validation"]["outputs"]["last_hidden_state"]["max_abs_diff"] < 1e-3
    assert exported["int8"]["path"] == OPENVINO_INT8
    assert exported["int8"]["quantization"]["samples"] == 96  # every train text (fewer than 300), one per sample
    assert "passed" not in exported["int8"]["validation"]

    for name in OPENVINO_ARTIFACTS:
        assert 0 < report["quality"][name]["cosine_to_teacher"]["mean"] <= 1
        assert name in report["parity_to_pytorch_student"]
    verdicts = report["gate"]["verdicts"]
    assert verdicts["openvino_fp32"]["checks"]["max_abs_diff_to_pytorch"]["key"] == "validation.max_abs_diff_onnx"
    assert verdicts["openvino_int8"]["checks"]["agreement_with_fp32_student"]["key"] == "validation.min_int8_agreement"
    assert all(verdicts[name]["passed"] for name in OPENVINO_ARTIFACTS) and report["gate"]["passed"]
    for batch in ("batch1", "batch8"):
        assert set(report["latency_ms"][batch]) == {"teacher", "student", "onnx_fp32", "onnx_int8", *OPENVINO_ARTIFACTS}

    card = (out / "README.md").read_text()
    assert "- openvino" in card and "| student (OpenVINO int8) |" in card and "batch 1 (ms)" in card
    assert "OpenVINO int8" in card.split("## Evaluation")[1].split("##")[0]  # its own metric column

    # The card's snippet, run as written: the repo id is the folder's name, downloads come from the folder.
    import huggingface_hub

    monkeypatch.chdir(out.parent)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, filename, **kw: str(Path(repo) / filename))
    namespace: dict = {}
    exec(compile(_python_block(card, "OpenVINO"), "card-snippet", "exec"), namespace)  # noqa: S102
    served = load_served_model(out, ServerSettings(backend="openvino", int8=True))
    feeds = served.encode_texts(["A fine day for a walk in the park.", "The weather is lovely today."]).feeds
    expected = served.add_task_output(feeds, served.run(feeds))["sentence_embedding"]
    np.testing.assert_allclose(namespace["embeddings"], expected, atol=1e-5)

    # A plain `serve` takes the fastest file whose verdict passed.
    passed = {name: ms for name, ms in report["latency_ms"]["batch8"].items()
              if verdicts.get(name, {}).get("passed") and name not in ("teacher", "student")}
    assert choose_artifact(out).artifact.name == min(passed, key=passed.__getitem__)


def test_export_openvino_adds_the_ir_to_a_finished_run(tiny_run: Path) -> None:
    out = tiny_run / "out"
    recipe = write_recipe(tiny_run, CLASSIFY)
    assert cli("run", str(tiny_run / "tiny-bert"), "-r", str(recipe), "-o", str(out), "--no-progress").exit_code == 0
    assert not (out / "openvino").exists()

    result = cli("export", str(out), "--openvino", "--no-progress")
    assert result.exit_code == 0, result.output
    assert all((out / name).is_file() for name in OPENVINO_FILE_PATTERNS)
    assert yaml.safe_load((out / "recipe.yaml").read_text())["export"]["openvino"] == "int8"
    report = json.loads((out / "report.json").read_text())
    for name in OPENVINO_ARTIFACTS:
        assert "agreement_with_teacher" in report["quality"][name] and report["gate"]["verdicts"][name]["passed"]
    assert report["parity_to_pytorch_student"]["openvino_fp32"]["argmax_agreement"] == 1.0
    assert "### OpenVINO" in (out / "README.md").read_text()

    # The recipe as run now says openvino: a plain `export` keeps the IR; the reopened state is the same run.
    assert cli("export", str(out), "--no-progress").exit_code == 0
    assert all((out / name).is_file() for name in OPENVINO_FILE_PATTERNS)
    assert cli("run", str(tiny_run / "tiny-bert"), "-r", str(recipe), "-o", str(out), "--no-progress").exit_code == 0


def test_openvino_without_data_writes_fp32_only_and_int8_asks_for_data(tiny_run: Path) -> None:
    base = "task: feature-extraction\npruning: {pruner: L1NormPruner, heads: 0.5}\ncard: {base_model: org/tiny}\n"
    fp32 = write_recipe(tiny_run, base + "export: {int8: none, openvino: true}\n", "fp32.yaml")
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(fp32), "-o", str(tiny_run / "a"), "--no-progress")
    assert result.exit_code == 0, result.output
    assert (tiny_run / "a" / OPENVINO_FP32).is_file() and not (tiny_run / "a" / OPENVINO_INT8).exists()
    assert "### OpenVINO" in (tiny_run / "a/README.md").read_text()

    int8 = write_recipe(tiny_run, base + "export: {int8: none, openvino: int8}\n", "int8.yaml")
    result = cli("run", str(tiny_run / "tiny-bert"), "-r", str(int8), "-o", str(tiny_run / "b"), "--no-progress")
    assert result.exit_code == 2 and "calibrates on the recipe's data" in result.output
    assert not (tiny_run / "b" / "openvino").exists()
