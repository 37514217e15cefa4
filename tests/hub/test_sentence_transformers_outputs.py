"""A sentence-transformers base stays a sentence-transformers model through `hubcompress run`: its
pooling and normalization are kept and read (validation, card), the validate stage proves every
consumer loads the folder, and after a push the card's Python snippets run by repo id in a process
without hubcompress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from consumer_fixtures import build_tiny_bert
from consumers import consumer_env, python_blocks, run_without_hubcompress
from fake_hub import FakeHub
from typer.testing import CliRunner

from hubcompress.cli import app
from hubcompress.pooling import Pooling
from tests.pipeline.conftest import EMBED, make_tiny_run_inputs


def sentence_transformers_base(root: Path, mode: str, normalize: bool) -> Path:
    """A tiny BERT saved by sentence-transformers with this pooling (and Normalize when asked)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling as StPooling, Transformer

    bert = build_tiny_bert(root / "bert", with_onnx=False)
    encoder = Transformer(str(bert), max_seq_length=48)
    modules = [encoder, StPooling(encoder.get_embedding_dimension(), pooling_mode=mode)]
    SentenceTransformer(modules=modules + ([Normalize()] if normalize else []), device="cpu").save(str(root / "st"))
    return root / "st"


def _run(tmp_path: Path, mode: str, normalize: bool, *extra: str) -> tuple[Path, object]:
    inputs = make_tiny_run_inputs(tmp_path / "inputs")
    base = sentence_transformers_base(tmp_path / "base", mode, normalize)
    recipe = inputs / "recipe.yaml"
    recipe.write_text(EMBED.replace("training: {steps: 4", "training: {steps: 2"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(base), "-r", str(recipe), "-o", str(out), "--no-progress", *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result


def test_mean_pooling_without_normalize_is_kept_and_read(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, "mean", False)
    assert Pooling.from_folder(out) == Pooling(("mean",), normalize=False)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling"]
    report = json.loads((out / "report.json").read_text())
    consumers = report["consumers"]
    assert consumers["passed"], consumers
    assert consumers["sentence_transformers"]["modules"] == ["Transformer", "Pooling"]
    assert consumers["sentence_transformers"]["min_cosine_to_onnx"] >= 0.9999
    assert consumers["transformers"]["trust_remote_code"] and consumers["transformers"]["plain_load"].startswith("refused")


def test_pushed_repo_loads_by_repo_id_and_the_card_snippets_run(fake_hub: FakeHub, tmp_path: Path) -> None:
    repo = "tester/tiny-st-small"
    out, _ = _run(tmp_path, "cls", True, "--push-to-hub", repo)
    report = json.loads((out / "report.json").read_text())
    assert report["consumers"]["passed"], report["consumers"]
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "cls"
    card = (out / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "custom_code" in card
    blocks = python_blocks(card)
    assert len(blocks) == 3 and "SentenceTransformer" in blocks[0] and "trust_remote_code=True" in blocks[1]
    assert "onnx/model_quantized.onnx" in blocks[2]
    env = consumer_env(fake_hub, tmp_path / "consumer-home")
    work = tmp_path / "consumer"
    work.mkdir()
    for block in blocks:
        done = run_without_hubcompress(block, env, work)
        assert done.returncode == 0, f"{block}\n---\n{done.stderr[-3000:]}"
    # By repo id: sentence-transformers, transformers + the card's pooling, and ONNX Runtime agree.
    agree = f"""
import numpy as np, onnxruntime as ort, torch
from huggingface_hub import hf_hub_download
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
repo, texts = {repo!r}, ["the small model loads", "a cat runs fast on every machine", "no one"]
st = SentenceTransformer(repo, trust_remote_code=True, device="cpu").encode(texts, convert_to_numpy=True)
tokenizer = AutoTokenizer.from_pretrained(repo)
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    tokens = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()(**batch).last_hidden_state.numpy()
session = ort.InferenceSession(hf_hub_download(repo, "onnx/model.onnx"), providers=["CPUExecutionProvider"])
feeds = {{i.name: batch[i.name].numpy() for i in session.get_inputs()}}
(onnx_tokens,) = session.run(["last_hidden_state"], feeds)
assert np.abs(onnx_tokens - tokens).max() <= 1e-4, np.abs(onnx_tokens - tokens).max()
cls = onnx_tokens[:, 0] / np.linalg.norm(onnx_tokens[:, 0], axis=1, keepdims=True)
cosine = (cls * st).sum(1) / np.linalg.norm(st, axis=1)
assert cosine.min() >= 0.9999, cosine
print("ok", cosine.min())
"""
    done = run_without_hubcompress(agree, env, work)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("mode", ["weightedmean"])
def test_a_pooling_the_card_cannot_write_by_hand_leaves_sentence_transformers_only(tmp_path: Path, mode: str) -> None:
    out, _ = _run(tmp_path, mode, True)
    blocks = python_blocks((out / "README.md").read_text())
    assert len(blocks) == 1 and "SentenceTransformer" in blocks[0]
    assert json.loads((out / "report.json").read_text())["consumers"]["passed"]
