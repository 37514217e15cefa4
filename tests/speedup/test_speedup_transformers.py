"""Speedup on tiny transformers built from configs: shapes shrink as masked, outputs equal the
masked model's on fresh inputs (other batch and sequence sizes, padded), checkpoints reload."""

from __future__ import annotations

import pytest
import torch

import hubcompress
from hubcompress.compression.pruning import L1NormPruner, model_layout, transformer_config_list
from hubcompress.speedup import ModelSpeedup

from ..conftest import tiny_bert, tiny_distilbert, tiny_electra, tiny_gpt2, tiny_roberta, tiny_vit

TEXT_MODELS = {"bert": tiny_bert, "roberta": tiny_roberta, "distilbert": tiny_distilbert,
               "electra": tiny_electra, "gpt2": tiny_gpt2}


def text_inputs(batch: int, seq: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq // 2:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def prune(model, **ratios):
    pruner = L1NormPruner(model, transformer_config_list(model, **ratios))
    _, masks = pruner.compress()
    fresh = [text_inputs(3, 11, 1), text_inputs(1, 5, 2)] if not hasattr(model.config, "image_size") else \
        [{"pixel_values": torch.randn(2, 3, 16, 16)}, {"pixel_values": torch.randn(5, 3, 16, 16)}]
    masked = [logits(model, x) for x in fresh]
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    pruner.unwrap_model()
    return masks, fresh, masked


def _width(module) -> int:
    return module.out_features if hasattr(module, "out_features") else module.weight.shape[1]


def assert_close(a, b, rel=1e-4):
    scale = max(float(a.abs().max()), 1.0)
    assert float((a - b).abs().max()) <= rel * scale


@pytest.mark.parametrize("name", sorted(TEXT_MODELS))
@pytest.mark.parametrize("hidden", [None, 0.25])
def test_text_models_shrink_and_match_the_masked_model(name, hidden, tmp_path):
    model = TEXT_MODELS[name]()
    layout = model_layout(model)
    ffn_widths = [_width(model.get_submodule(b.ffn_in)) for b in layout.blocks]
    masks, fresh, masked = prune(model, heads=0.5, ffn=0.5, hidden=hidden)
    before = sum(p.numel() for p in model.parameters())
    ModelSpeedup(model, text_inputs(2, 7, 0), masks).speedup_model()
    after = sum(p.numel() for p in model.parameters())
    assert after < before
    for x, ref in zip(fresh, masked):
        assert_close(ref, logits(model, x))
    for block, width in zip(layout.blocks, ffn_widths):  # heads and FFN gone; block attributes follow
        assert _width(model.get_submodule(block.ffn_in)) == width // 2
        attention = model.get_submodule(block.out.rpartition(".")[0]) if block.qkv else None
        if attention is not None:
            assert attention.num_heads == 2 and attention.split_size == 16
    if hidden:
        first_writer = model.get_submodule(layout.embeddings[0])
        assert (first_writer.weight.shape[1] if isinstance(first_writer, torch.nn.Embedding)
                else first_writer.out_features) == 24
    # the checkpoint reloads to the same outputs (up to float rounding: transformers' loader), without pickle
    hubcompress.save_pretrained(model, tmp_path)
    reloaded = hubcompress.from_pretrained(tmp_path)
    for x in fresh:
        assert_close(logits(model, x), logits(reloaded, x), 1e-6)


def test_bert_head_attributes_follow(tmp_path):
    model = tiny_bert()
    masks, fresh, masked = prune(model, heads=0.5)
    ModelSpeedup(model, text_inputs(2, 7, 0), masks).speedup_model()
    attention = model.bert.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.all_head_size, attention.query.out_features) == (2, 16, 16)
    assert model.bert.encoder.layer[0].attention.output.dense.in_features == 16


def test_vit_heads_and_ffn():
    model = tiny_vit()
    masks, fresh, masked = prune(model, heads=0.5, ffn=0.5)
    ModelSpeedup(model, {"pixel_values": torch.randn(1, 3, 16, 16)}, masks).speedup_model()
    for x, ref in zip(fresh, masked):
        assert_close(ref, logits(model, x))
    assert model.vit.layers[0].attention.num_attention_heads == 2
    assert model.vit.layers[0].mlp.fc1.out_features == 32


def test_constant_dummy_inputs_never_make_a_module_prunable():
    model = tiny_bert()
    masks, fresh, masked = prune(model, ffn=0.5)
    dummy = {"input_ids": torch.randint(3, 100, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long),
             "token_type_ids": torch.zeros(2, 7, dtype=torch.long)}
    speedup = ModelSpeedup(model, dummy, masks)
    speedup.speedup_model()
    assert model.bert.embeddings.token_type_embeddings.weight.shape == (2, 32)
    assert model.bert.embeddings.word_embeddings.weight.shape == (100, 32)
    assert not speedup.report.shortfalls
    for x, ref in zip(fresh, masked):
        assert_close(ref, logits(model, x))


def test_a_model_output_keeps_its_width_and_the_shortfall_is_reported():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                 vocab_size=100)).eval()
    pruner = L1NormPruner(model, transformer_config_list(model, hidden=0.25))
    _, masks = pruner.compress()
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    pruner.unwrap_model()
    speedup = ModelSpeedup(model, text_inputs(2, 7, 0), masks)
    speedup.speedup_model()
    assert model.get_input_embeddings().weight.shape == (100, 32)  # last_hidden_state is an output
    assert speedup.report.shortfalls["embeddings.word_embeddings"]["weight"] == {"masked": 0.25, "removed": 0.0}
