"""What hubcompress publishes loads with its users' own tools, in a process that cannot import
hubcompress: transformers (remote code where the stock config cannot state the shapes, plain
otherwise), for every architecture speedup supports, with the outputs of hubcompress.from_pretrained."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from consumers import run_without_hubcompress

import hubcompress
from hubcompress.compression.pruning import L1NormPruner, transformer_config_list
from hubcompress.speedup import ModelSpeedup
from tests.conftest import (
    tiny_albert,
    tiny_bert,
    tiny_deberta_v2,
    tiny_distilbert,
    tiny_electra,
    tiny_gpt2,
    tiny_modernbert,
    tiny_mpnet,
    tiny_roberta,
    tiny_vit,
    tiny_xlm_roberta,
)

MODELS = {"bert": tiny_bert, "roberta": tiny_roberta, "distilbert": tiny_distilbert, "electra": tiny_electra,
          "gpt2": tiny_gpt2, "vit": tiny_vit, "xlm-roberta": tiny_xlm_roberta, "mpnet": tiny_mpnet,
          "deberta-v2": tiny_deberta_v2, "albert": tiny_albert, "modernbert": tiny_modernbert}
# heads + FFN + hidden width needs remote code; one FFN width everywhere is stated by the stock config.
VARIANTS = {"narrowed": dict(heads=0.5, ffn=0.25, hidden=0.25), "uniform-ffn": dict(ffn=0.5)}


def _inputs(name: str, batch: int, seq: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch * 100 + seq)
    if name == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    ids = torch.randint(3, 100, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq // 2:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}


def _pruned(name: str, variant: str) -> torch.nn.Module:
    model = MODELS[name]()
    ratios = dict(VARIANTS[variant])
    if name == "vit":
        ratios.pop("hidden", None)  # not offered for ViT
    pruner = L1NormPruner(model, transformer_config_list(model, **ratios))
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(model, _inputs(name, 2, 7), masks).speedup_model()
    return model.eval()


CONSUMER = """
import json, sys
from pathlib import Path
import numpy as np, torch, transformers

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path({root!r})
report = {{}}
for folder in sorted(p for p in root.iterdir() if p.is_dir()):
    config = json.loads((folder / "config.json").read_text())
    inputs = {{k: torch.from_numpy(v) for k, v in np.load(folder / "inputs.npz").items()}}
    expected = np.load(folder / "expected.npz")
    # the Auto classes auto_map names; a plain folder: AutoModel and the class config.json names
    classes = list(config.get("auto_map") or ["AutoModel", config["architectures"][0]])
    row = {{"remote": "auto_map" in config, "diffs": {{}}, "plain": {{}}}}
    for auto in classes:
        auto_class = getattr(transformers, auto)
        key = "base" if auto == "AutoModel" else "head"
        model = auto_class.from_pretrained(folder, trust_remote_code=row["remote"]).eval()
        with torch.no_grad():
            out = model(**inputs)[0].numpy()
        ref = expected[key]
        row["diffs"][auto] = float(np.abs(out - ref).max() / max(float(np.abs(ref).max()), 1.0))
        if row["remote"]:
            try:
                auto_class.from_pretrained(folder)
                row["plain"][auto] = "loaded"
            except Exception as error:
                row["plain"][auto] = type(error).__name__
    report[folder.name] = row
print(json.dumps(report))
"""


def test_every_architecture_loads_without_hubcompress(tmp_path: Path) -> None:
    root = tmp_path / "folders"
    for name in MODELS:
        for variant in VARIANTS:
            model = _pruned(name, variant)
            folder = hubcompress.save_pretrained(model, root / f"{name}-{variant}")
            reloaded = hubcompress.from_pretrained(folder)
            inputs = _inputs(name, 3, 9)  # another batch and length than speedup traced, padded
            with torch.no_grad():
                head, base = reloaded(**inputs)[0], reloaded.base_model(**inputs)[0]
                assert torch.allclose(head, model(**inputs)[0], atol=1e-6)
            np.savez(folder / "inputs.npz", **{k: v.numpy() for k, v in inputs.items()})
            np.savez(folder / "expected.npz", head=head.numpy(), base=base.numpy())
            config = json.loads((folder / "config.json").read_text())
            assert (variant == "narrowed") == ("auto_map" in config), (name, variant, config.get("auto_map"))
            assert (variant == "narrowed") == (folder / "modeling_hubcompress.py").exists()
            if variant == "uniform-ffn":  # the real width, in the config's own key
                assert json.loads((folder / "hubcompress.json").read_text())["loading"] == "plain"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    code = CONSUMER.format(root=str(root))
    work = tmp_path / "consumer"
    work.mkdir()
    done = run_without_hubcompress(code, env, work, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report) == len(MODELS) * len(VARIANTS)
    for folder, row in report.items():
        assert row["diffs"] and all(d <= 1e-5 for d in row["diffs"].values()), (folder, row)
        if row["remote"]:  # plain loading never silently gives other numbers: transformers refuses
            assert row["plain"] and all(v == "RuntimeError" for v in row["plain"].values()), (folder, row)
        assert "AutoModel" in row["diffs"] and len(row["diffs"]) >= 2, (folder, row)  # + the head's Auto class


def test_config_json_states_the_per_layer_shapes(tmp_path: Path) -> None:
    model = _pruned("bert", "narrowed")
    folder = hubcompress.save_pretrained(model, tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    spec = config["hubcompress"]
    query = spec["modules"]["bert.encoder.layer.0.attention.self.query"]
    assert query["class"] == "Linear" and query["shapes"]["weight"] == [16, 24]
    assert spec["attributes"]["bert.encoder.layer.0.attention.self"]["num_attention_heads"] == 2
    norm = spec["modules"]["bert.embeddings.LayerNorm"]
    assert norm["class"] == "WidthPrunedLayerNorm" and norm["attributes"]["full_width"] == 32
    assert config["auto_map"] == {
        "AutoModel": "modeling_hubcompress.NarrowedBertModel",
        "AutoModelForSequenceClassification": "modeling_hubcompress.NarrowedBertForSequenceClassification"}
    source = (folder / "modeling_hubcompress.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "copy", "typing", "torch", "transformers"}, imports
    # a second save at other shapes leaves no stale modeling file behind
    hubcompress.save_pretrained(_pruned("bert", "uniform-ffn"), folder)
    assert not (folder / "modeling_hubcompress.py").exists()
    assert "auto_map" not in json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("name", ["gpt2"])
def test_tied_embeddings_stay_tied_after_reload(name: str, tmp_path: Path) -> None:
    model = _pruned(name, "narrowed")
    reloaded = hubcompress.from_pretrained(hubcompress.save_pretrained(model, tmp_path / name))
    assert reloaded.lm_head.weight.data_ptr() == reloaded.transformer.wte.weight.data_ptr()
