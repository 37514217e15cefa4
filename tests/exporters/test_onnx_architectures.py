"""ONNX export and parity for each architecture added to the registry: the pruned, sped-up classifier
(per-layer heads, FFN and hidden width narrowed) for text-classification, the stock encoder for
feature-extraction; ONNX Runtime in a subprocess matches PyTorch on padded batches of other shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from exporters.onnx import export_config_for_model, export_onnx, registered_export_configs, validate_onnx
from hubcompress.compression.pruning import L1NormPruner, transformer_config_list
from hubcompress.speedup import ModelSpeedup
from tests.conftest import tiny_albert, tiny_deberta_v2, tiny_modernbert, tiny_mpnet, tiny_xlm_roberta

MODELS = {"xlm-roberta": tiny_xlm_roberta, "mpnet": tiny_mpnet, "deberta-v2": tiny_deberta_v2, "albert": tiny_albert,
          "modernbert": tiny_modernbert}


def _pruned(name: str) -> torch.nn.Module:
    model = MODELS[name]()
    pruner = L1NormPruner(model, transformer_config_list(model, heads=0.5, ffn=0.25, hidden=0.25))
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    ModelSpeedup(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, masks).speedup_model()
    return model.eval()


def test_every_new_architecture_has_both_text_tasks() -> None:
    registry = registered_export_configs()
    for model_type in MODELS:
        assert (model_type, "feature-extraction") in registry and (model_type, "text-classification") in registry


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pruned_classifier_and_stock_encoder_export_and_match(name: str, tmp_path: Path) -> None:
    classifier = _pruned(name)
    torch.manual_seed(0)
    encoder = transformers.AutoModel.from_config(MODELS[name]().config).eval()  # with its pooler, where it has one
    for task, model in (("text-classification", classifier), ("feature-extraction", encoder)):
        config = export_config_for_model(model, task)
        # the pipeline's default exporter (TorchScript); validation runs ONNX Runtime in a subprocess
        result = export_onnx(model, None, tmp_path / task / "model.onnx", config=config, prefer="torchscript")
        report = validate_onnx(model, result.output_path, config)
        assert report.passed, (name, task, report.summary())
        assert list(report.summary()) == config.output_names
