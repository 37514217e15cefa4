"""A model that lost whole layers loads where its users are, without hubcompress: depth-only is a
stock checkpoint with fewer layers (plain transformers), depth + width goes through the remote
code; both export to ONNX with outputs that match PyTorch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from consumers import run_without_hubcompress
from transformers import BertConfig, BertForSequenceClassification

import hubcompress
from exporters.onnx import export_config_for_model, export_onnx, validate_onnx
from hubcompress.compression.pruning import L1NormPruner, transformer_config_list
from hubcompress.compression.pruning.depth import drop_layers
from hubcompress.speedup import ModelSpeedup

CONSUMER = """
import json
from pathlib import Path
import numpy as np, torch, transformers

report = {{}}
for folder in sorted(p for p in Path({root!r}).iterdir() if p.is_dir()):
    config = json.loads((folder / "config.json").read_text())
    inputs = {{k: torch.from_numpy(v) for k, v in np.load(folder / "inputs.npz").items()}}
    remote = "auto_map" in config
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote).eval()
    with torch.no_grad():
        logits = model(**inputs).logits.numpy()
    report[folder.name] = {{"remote": remote, "layers": model.config.num_hidden_layers,
                           "diff": float(np.abs(logits - np.load(folder / "expected.npy")).max())}}
print(json.dumps(report))
"""


def _inputs() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 100, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}


def _model(width: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64)).eval()
    drop_layers(model, [0, 2])
    if width:  # per-layer heads and FFN widths of the two kept layers: the stock config cannot say them
        pruner = L1NormPruner(model, transformer_config_list(model, heads=0.5, ffn=0.25))
        _, masks = pruner.compress()
        pruner.unwrap_model()
        ModelSpeedup(model, _inputs(), masks).speedup_model()
    return model.eval()


def test_depth_only_is_plain_and_mixed_is_remote_code_and_both_export(tmp_path: Path) -> None:
    root = tmp_path / "folders"
    for name, width in (("depth", False), ("mixed", True)):
        model = _model(width)
        folder = hubcompress.save_pretrained(model, root / name)
        config = json.loads((folder / "config.json").read_text())
        assert config["num_hidden_layers"] == 2
        assert ("auto_map" in config) == width
        assert json.loads((folder / "hubcompress.json").read_text())["loading"] == ("remote-code" if width else "plain")
        inputs = _inputs()
        with torch.no_grad():
            expected = model(**inputs).logits
            assert torch.allclose(hubcompress.from_pretrained(folder)(**inputs).logits, expected, atol=1e-6)
        np.savez(folder / "inputs.npz", **{k: v.numpy() for k, v in inputs.items()})
        np.save(folder / "expected.npy", expected.numpy())
        onnx_config = export_config_for_model(model, "text-classification")
        result = export_onnx(model, None, tmp_path / "onnx" / name / "model.onnx", config=onnx_config,
                             prefer="torchscript")
        report = validate_onnx(model, result.output_path, onnx_config)
        assert report.passed, (name, report.summary())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    work = tmp_path / "consumer"
    work.mkdir()
    done = run_without_hubcompress(CONSUMER.format(root=str(root)), env, work, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["depth"] == {"remote": False, "layers": 2, "diff": report["depth"]["diff"]}
    assert report["mixed"]["remote"] and report["mixed"]["layers"] == 2
    assert all(row["diff"] <= 1e-5 for row in report.values()), report
