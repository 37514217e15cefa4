"""`hubcompress run --push-to-hub` against the fake hub: what lands there is byte-identical to the
output folder (minus the run's bookkeeping), and the pushed pruned model reloads by repo id."""

from __future__ import annotations

from pathlib import Path

import torch
from fake_hub import FakeHub
from huggingface_hub import hf_hub_download, list_repo_files
from typer.testing import CliRunner

from hubcompress import from_pretrained
from hubcompress.cli import app
from tests.pipeline.conftest import CLASSIFY, make_tiny_run_inputs

REPO = "tester/tiny-bert-small"


def test_run_pushes_and_the_pushed_model_reloads(fake_hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_tiny_run_inputs(tmp_path / "inputs")
    recipe = inputs / "recipe.yaml"
    recipe.write_text(CLASSIFY)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(inputs / "tiny-bert"), "-r", str(recipe), "-o", str(out),
                                      "--no-progress", "--push-to-hub", REPO], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    local = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and ".hubcompress" not in p.parts}
    remote = set(list_repo_files(REPO))
    assert not any(name.startswith(".hubcompress") for name in remote)
    # report.json is rewritten after the push (it records the commit), so it is the one file that differs.
    pushed = {name for name in local if name != "report.json"}
    assert pushed <= remote and "onnx/model_quantized.onnx" in remote and "README.md" in remote
    assert "onnx/model_int8.onnx" in remote  # the alias transformers.js's dtype "int8" loads
    for name in pushed:
        assert Path(hf_hub_download(REPO, name)).read_bytes() == local[name], name

    remote_model, local_model = from_pretrained(REPO), from_pretrained(out)
    batch = {"input_ids": torch.tensor([[2, 5, 11, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        assert torch.equal(remote_model(**batch).logits, local_model(**batch).logits)
    assert "commit" in result.output or REPO in result.output


def test_push_command_uploads_an_output_folder(fake_hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_tiny_run_inputs(tmp_path / "inputs")
    recipe = inputs / "recipe.yaml"
    recipe.write_text(CLASSIFY.replace("int8: dynamic", "int8: none"))
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(inputs / "tiny-bert"), "-r", str(recipe), "-o", str(out),
                               "--no-progress"], catch_exceptions=False).exit_code == 0
    result = runner.invoke(app, ["push", str(out), REPO, "--create-pr"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "PR" in result.output


def test_run_loads_a_hub_id_at_a_revision(fake_hub: FakeHub, tmp_path: Path) -> None:
    from hubcompress.hub import push_folder

    inputs = make_tiny_run_inputs(tmp_path / "inputs")
    commit = push_folder(inputs / "tiny-bert", "tester/tiny-base").commit_oid
    recipe = inputs / "recipe.yaml"
    recipe.write_text(CLASSIFY.replace("card: {base_model: tester/tiny-bert, license: apache-2.0}",
                                       f"model: {{id: tester/tiny-base, revision: {commit}}}\ncard: {{license: mit}}"))
    out = tmp_path / "out"
    before = len(fake_hub.requests)
    result = CliRunner().invoke(app, ["run", "-r", str(recipe), "-o", str(out), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    downloads = [r for r in fake_hub.requests[before:] if "tiny-base" in str(r)]
    assert downloads and any(commit in str(r) for r in downloads)  # fetched from the hub, at that commit
    card = (out / "README.md").read_text()
    assert "base_model: tester/tiny-base" in card and commit in card
    assert "revision: " + commit in (out / "recipe.yaml").read_text()
