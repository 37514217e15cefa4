"""`hubcompress run` on a tiny ViT image classifier: image folders in, a pruned, distilled and
exported classifier out, its metrics per artifact in report.json; the base-model path fine-tunes
a teacher first; a bad folder is named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hubcompress.cli import app

from .conftest import write_recipe
from .image_models import make_vit_inputs


@pytest.fixture(scope="module")
def vit_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vit_inputs(tmp_path_factory.mktemp("vit"))


RECIPE = """\
task: image-classification
data:
  files: {train: images/train, validation: images/validation}
pruning: {pruner: L1NormPruner, heads: 0.5, ffn: 0.5}
distillation: {distiller: DynamicLayerwiseDistiller}
training: {steps: 6, lr: 1.0e-3, batch_size: 8, device: cpu}
export: {int8: dynamic}
card: {base_model: tester/tiny-vit}
"""


def _run(model: Path, recipe: Path, out: Path):
    return CliRunner().invoke(app, ["run", str(model), "--recipe", str(recipe), "--output", str(out),
                                    "--no-progress"], catch_exceptions=False)


@pytest.fixture(scope="module")
def vit_out(vit_inputs: Path) -> Path:
    """The tiny ViT compressed, exported and validated (one run for the tests of this module)."""
    out = vit_inputs / "out"
    result = _run(vit_inputs / "tiny-vit", write_recipe(vit_inputs, RECIPE), out)
    assert result.exit_code == 0, result.output
    return out


def test_image_classifier_runs_end_to_end(vit_inputs: Path, vit_out: Path) -> None:
    out = vit_out
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "image-classification" and report["speedup"]["applied"]
    quality = report["quality"]
    assert set(quality) == {"teacher", "student", "onnx_fp32", "onnx_int8"}
    assert quality["teacher"]["accuracy"] > 0.75  # the fixture's training separates the colours
    assert {"accuracy", "f1_macro", "agreement_with_teacher"} <= set(quality["onnx_int8"])
    assert report["parity_to_pytorch_student"]["onnx_fp32"]["argmax_agreement"] == 1.0
    assert report["teacher"]["accuracy"] == quality["teacher"]["accuracy"]
    assert report["teacher"]["dataset"] == report["eval"]["dataset"] == "images"  # the folder, not the split
    assert "sequence_length" not in report["latency_ms"] and "onnx_int8" in report["latency_ms"]["batch1"]
    assert (out / "preprocessor_config.json").is_file()
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card
    # The validate stage's own consumer check ran on images: transformers (remote code when the
    # folder needs it) against the ONNX file, and every ONNX file, in a process without hubcompress.
    consumers = report["consumers"]
    assert consumers["passed"], consumers["reasons"]
    assert consumers["transformers"]["loaded_as"].endswith("ForImageClassification")
    assert consumers["transformers"]["max_rel_diff_to_onnx"] < 1e-3
    assert "onnx/model_quantized.onnx" in consumers["onnxruntime"]

    # A process without hubcompress loads the folder with transformers' own pipeline, and the ONNX file.
    script = f"""
import sys, numpy as np, onnxruntime as ort
sys.modules["hubcompress"] = None
from PIL import Image
from transformers import AutoImageProcessor, pipeline
folder = {str(out)!r}
image = Image.open({str(vit_inputs / "images/validation/red/0.png")!r})
trust = "auto_map" in open(folder + "/config.json").read()
top = pipeline("image-classification", model=folder, trust_remote_code=trust)(image)[0]
pixels = AutoImageProcessor.from_pretrained(folder)(image, return_tensors="np")["pixel_values"]
session = ort.InferenceSession(folder + "/onnx/model.onnx", providers=["CPUExecutionProvider"])
(logits,) = session.run(["logits"], {{"pixel_values": pixels}})
print(top["label"], ["blue", "red"][int(logits.argmax())])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    label, onnx_label = done.stdout.split()
    assert label == onnx_label and label in ("red", "blue")


def test_base_vit_gets_a_finetuned_teacher(vit_inputs: Path) -> None:
    recipe = RECIPE + "teacher: {finetune: {steps: 15, lr: 3.0e-3, batch_size: 16}}\n"
    out = vit_inputs / "out-base"
    result = _run(vit_inputs / "tiny-vit-base", write_recipe(vit_inputs, recipe, "base.yaml"), out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["source"] == "finetuned" and report["teacher"]["passed"]
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "blue", "1": "red"}


def test_a_file_where_an_image_folder_belongs_is_named(vit_inputs: Path) -> None:
    (vit_inputs / "train.jsonl").write_text("{}\n")
    recipe = RECIPE.replace("train: images/train", "train: train.jsonl")
    result = _run(vit_inputs / "tiny-vit", write_recipe(vit_inputs, recipe, "bad.yaml"), vit_inputs / "out-bad")
    assert result.exit_code == 2
    assert "data.files.train" in result.output and "one subfolder per class" in result.output


def test_served_image_classifier_answers_predict_and_v2(vit_inputs: Path, vit_out: Path) -> None:
    import base64

    from fastapi.testclient import TestClient

    from hubcompress.serving import create_app, load_served_model

    out = vit_out
    paths = [vit_inputs / "images/validation/red/0.png", vit_inputs / "images/validation/blue/0.png"]
    images = [base64.b64encode(p.read_bytes()).decode() for p in paths]
    model = load_served_model(out)
    with TestClient(create_app(model)) as client:
        answer = client.post("/predict", json={"inputs": images}).json()
        assert answer["task"] == "image-classification"
        assert [row["label"] for row in answer["predictions"]] == ["red", "blue"]
        assert abs(sum(answer["predictions"][0]["scores"].values()) - 1) < 1e-5
        bad = client.post("/predict", json={"inputs": ["bm90IGFuIGltYWdl"]})
        assert bad.status_code == 400 and "inputs[0] is not a base64-encoded image" in bad.json()["error"]
        # The v2 protocol: base64 images on the BYTES input, or pixel_values as numbers.
        v2 = client.post("/v2/models/out/infer", json={
            "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": images}],
            "outputs": [{"name": "probabilities"}]}).json()
        probabilities = np.array(v2["outputs"][0]["data"]).reshape(v2["outputs"][0]["shape"])
        assert probabilities.shape == (2, 2) and probabilities[0].argmax() == 1
        # One image each way (dynamic int8 scales its activations per batch, so batches of 1 and 2 differ).
        one = client.post("/v2/models/out/infer", json={
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": images[:1]}],
            "outputs": [{"name": "probabilities"}]}).json()["outputs"][0]["data"]
        pixels = model.encode_texts(images[:1]).feeds["pixel_values"]
        v2 = client.post("/v2/models/out/infer", json={
            "inputs": [{"name": "pixel_values", "shape": list(pixels.shape), "datatype": "FP32",
                        "data": pixels.ravel().tolist()}], "outputs": [{"name": "probabilities"}]}).json()
        np.testing.assert_allclose(v2["outputs"][0]["data"], one, atol=1e-5)
