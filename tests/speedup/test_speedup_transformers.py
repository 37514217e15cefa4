"""Speedup on tiny transformers built from configs: shapes shrink as masked, outputs equal the
masked model's on fresh inputs (other batch and sequence sizes, padded), checkpoints reload."""

from __future__ import annotations

import pytest
import torch

import hubcompress
from hubcompress.architectures import layer_widths
from hubcompress.compression.pruning import L1NormPruner, model_layout, transformer_config_list
from hubcompress.errors import ConfigListError
from hubcompress.speedup import ModelSpeedup

from ..conftest import (
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

TEXT_MODELS = {"bert": tiny_bert, "roberta": tiny_roberta, "distilbert": tiny_distilbert,
               "electra": tiny_electra, "gpt2": tiny_gpt2, "xlm-roberta": tiny_xlm_roberta, "mpnet": tiny_mpnet,
               "deberta-v2": tiny_deberta_v2, "albert": tiny_albert, "modernbert": tiny_modernbert}


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
        attention = model.get_submodule(block.out.rpartition(".")[0])
        if hasattr(attention, "split_size"):  # GPT-2's fused c_attn
            assert attention.num_heads == 2 and attention.split_size == 16
    assert [row["heads"] for row in layer_widths(model)] == [2] * len(layout.blocks)
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


def test_mpnet_layers_keep_the_same_heads_as_its_shared_position_bias():
    model = tiny_mpnet()
    masks, fresh, masked = prune(model, heads=0.5)
    speedup = ModelSpeedup(model, text_inputs(2, 7, 0), masks)
    speedup.speedup_model()
    assert not speedup.report.shortfalls  # every masked head is removed: no union over layers
    assert model.mpnet.encoder.relative_attention_bias.weight.shape == (32, 2)
    assert [layer.attention.attn.num_attention_heads for layer in model.mpnet.encoder.layer] == [2, 2]
    for x, ref in zip(fresh, masked):
        assert_close(ref, logits(model, x))
    with pytest.raises(ConfigListError, match="relative_attention_bias"):
        transformer_config_list(tiny_mpnet(), heads=0.5, global_heads=True)


def test_deberta_v2_position_projections_share_the_heads():
    # DeBERTa-v2's own pos_key_proj / pos_query_proj, reading rel_embeddings.weight without a LayerNorm
    model = tiny_deberta_v2(share_att_key=False, norm_rel_ebd="none")
    masks, fresh, masked = prune(model, heads=0.5, ffn=0.5, hidden=0.25)
    speedup = ModelSpeedup(model, text_inputs(2, 7, 0), masks)
    speedup.speedup_model()
    assert not speedup.report.shortfalls
    attention = model.deberta.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.all_head_size) == (2, 16)
    assert attention.pos_key_proj.weight.shape == attention.pos_query_proj.weight.shape == (16, 24)
    assert model.deberta.encoder.rel_embeddings.weight.shape == (16, 24)  # narrowed with the stream
    for x, ref in zip(fresh, masked):
        assert_close(ref, logits(model, x))


def test_deberta_with_a_convolution_refuses_hidden_width():
    from transformers import DebertaV2Config, DebertaV2Model

    model = DebertaV2Model(DebertaV2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                           intermediate_size=64, vocab_size=100, conv_kernel_size=3))
    with pytest.raises(ConfigListError, match="conv_kernel_size"):
        transformer_config_list(model, hidden=0.25)
    assert transformer_config_list(model, heads=0.5, ffn=0.5)


def test_albert_prunes_its_shared_layer_once():
    model = tiny_albert()
    assert len(model_layout(model).blocks) == 1  # one layer, applied twice
    masks, fresh, masked = prune(model, heads=0.5, ffn=0.5, hidden=0.25)
    ModelSpeedup(model, text_inputs(2, 7, 0), masks).speedup_model()
    layer = model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    assert (layer.attention.num_attention_heads, layer.ffn.out_features) == (2, 32)
    assert model.albert.encoder.embedding_hidden_mapping_in.weight.shape == (24, 16)
    assert model.albert.embeddings.word_embeddings.weight.shape == (100, 16)  # the embeddings keep their width
    for x, ref in zip(fresh, masked):
        assert_close(ref, logits(model, x))


def test_modernbert_glu_neurons_and_fused_heads():
    model = tiny_modernbert()
    masks, fresh, masked = prune(model, heads=0.5, ffn=0.25)
    ModelSpeedup(model, text_inputs(2, 7, 0), masks).speedup_model()
    for layer in model.model.layers:
        assert layer.attn.Wqkv.weight.shape == (3 * 16, 32) and layer.attn.Wo.in_features == 16
        assert layer.mlp.Wi.out_features == 2 * 48 and layer.mlp.Wo.in_features == 48  # input and gate halves
    for x, ref in zip(fresh, masked):  # 11 tokens: wider than layer 1's attention window
        assert_close(ref, logits(model, x))
