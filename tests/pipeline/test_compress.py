"""The compression stage's training details: dropout off while distilling, train mode kept."""

from __future__ import annotations

import torch

from hubcompress.pipeline.compress import dropout_probability

from ..conftest import tiny_bert


def test_dropout_probability_zeroes_dropout_in_train_mode_and_restores_it() -> None:
    model = tiny_bert().train()
    x = {"input_ids": torch.randint(5, 90, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    torch.manual_seed(0)
    assert not torch.equal(model(**x).logits, model(**x).logits)  # dropout is on
    with dropout_probability(model, 0.0):
        assert model.training  # compressors observe in train mode (QAT's activation ranges)
        assert torch.equal(model(**x).logits, model(**x).logits)
        assert torch.allclose(model(**x).logits, model.eval()(**x).logits.detach(), atol=1e-6)
        model.train()
    probabilities = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert probabilities == {0.1}
    with dropout_probability(model, None):  # None leaves dropout as it is
        assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
