"""Tiny models built from configs, exported once per session (dynamo export is the slow step)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel, DistilBertConfig, DistilBertModel

from exporters.onnx import ExportResult, OnnxConfig, export_config_for_model, export_onnx


def tiny_bert_config(**overrides: object) -> BertConfig:
    """The tiny BERT every test uses; ``overrides`` change single fields (e.g. ``num_labels``)."""
    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=100)
    settings.update(overrides)
    return BertConfig(**settings)


@pytest.fixture
def make_tiny_bert_config():
    return tiny_bert_config


@dataclass
class Exported:
    model: nn.Module
    config: OnnxConfig
    result: ExportResult

    @property
    def path(self) -> Path:
        return Path(self.result.output_path)


def _export(model: nn.Module, task: str, folder: Path) -> Exported:
    config = export_config_for_model(model, task)
    result = export_onnx(model, None, folder / "model.onnx", config=config)
    return Exported(model.eval(), config, result)


@pytest.fixture(scope="session")
def bert_features(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    torch.manual_seed(0)
    return _export(BertModel(tiny_bert_config()), "feature-extraction", tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def bert_classifier(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    torch.manual_seed(1)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=3))
    return _export(model, "text-classification", tmp_path_factory.mktemp("bert-cls"))


@pytest.fixture(scope="session")
def distilbert_features(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    torch.manual_seed(2)
    config = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=100)
    return _export(DistilBertModel(config), "feature-extraction", tmp_path_factory.mktemp("distilbert"))
