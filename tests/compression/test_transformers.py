"""Transformer models: whole heads, FFN neurons and the hidden width as dependency groups; the
transformers Trainer as the training loop."""

from __future__ import annotations

import pytest
import torch

from hubcompress.compression import TransformersEvaluator
from hubcompress.compression.pruning import (
    AGPPruner,
    L1NormPruner,
    MovementPruner,
    SlimPruner,
    TaylorPruner,
    model_layout,
    transformer_config_list,
)
from hubcompress.errors import ConfigListError

from ..conftest import tiny_bert
from .helpers import zero_fraction


def head_masks(masks, layout, block):
    """Per projection, a [num_heads] 0/1 vector: is the head kept entirely?"""
    nh, hd = layout.num_heads, layout.head_dim

    def rows(mask):  # [nh * hd, ...] -> per head
        per = mask.reshape(nh, -1)
        assert torch.all((per.sum(1) == 0) | (per.sum(1) == per.shape[1])), "a head is partly pruned"
        return per[:, 0]

    if block.qkv:
        w = masks[block.qkv]["weight"]  # [in, 3 * hidden]
        out = {s: rows(w[:, i * nh * hd:(i + 1) * nh * hd].T.contiguous()) for i, s in enumerate("qkv")}
        out["o"] = rows(masks[block.out]["weight"])  # Conv1D [in, out]: heads are rows
    else:
        out = {s: rows(masks[getattr(block, s)]["weight"]) for s in "qkv"}
        out["o"] = rows(masks[block.out]["weight"].T.contiguous())
    return out


def test_head_groups_cover_whole_heads_and_qkvo_agree(tiny_transformer):
    name, model = tiny_transformer
    layout = model_layout(model)
    _, masks = L1NormPruner(model, transformer_config_list(model, heads=0.5, ffn=0.5)).compress()
    for block in layout.blocks:
        heads = head_masks(masks, layout, block)
        assert all(torch.equal(heads["q"], heads[s]) for s in "kvo")
        assert heads["q"].sum() == layout.num_heads // 2
        ffn_in = masks[block.ffn_in]["weight"]
        ffn_out = masks[block.ffn_out]["weight"]
        kept_in = ffn_in.amax(1) if not block.qkv else ffn_in.amax(0)
        kept_out = ffn_out.amax(0) if not block.qkv else ffn_out.amax(1)
        assert torch.equal(kept_in, kept_out) and zero_fraction(kept_in) == 0.5
    x = torch.randint(0, 100, (2, 7))
    assert torch.isfinite(model(input_ids=x).logits).all()


def test_hidden_width_group_is_one_mask_across_the_residual_stream(tiny_transformer):
    name, model = tiny_transformer
    cfg = transformer_config_list(model, hidden=0.25)
    _, masks = L1NormPruner(model, cfg).compress()
    layout = model_layout(model)
    channel_masks = []
    for module_name, targets in masks.items():
        for target, mask in targets.items():
            if target in ("_input_", "_output_") or module_name in layout.norms or \
                    any(module_name in b.norms for b in layout.blocks):
                channel_masks.append(mask.flatten())
            elif module_name in layout.embeddings:
                channel_masks.append(mask.amax(0))
    assert len(channel_masks) > 10
    assert all(torch.equal(channel_masks[0], m) for m in channel_masks)
    assert zero_fraction(channel_masks[0]) == 0.25


def test_global_heads_rank_layers_together():
    model = tiny_bert()
    layout = model_layout(model)
    _, masks = L1NormPruner(model, transformer_config_list(model, heads=0.5, global_heads=True)).compress()
    kept = sum(head_masks(masks, layout, b)["q"].sum() for b in layout.blocks)
    assert kept == len(layout.blocks) * layout.num_heads // 2


def test_unknown_architecture_says_how_to_register():
    from torch import nn

    with pytest.raises(ConfigListError, match="register_layout"):
        transformer_config_list(nn.Linear(2, 2), heads=0.5)


# --- the transformers Trainer as the loop -----------------------------------------------------

class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 100, (n, 12), generator=g)
        self.labels = (self.ids[:, 0] > 50).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.labels[i]}


def make_trainer(model, tmp_path):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=1e-3,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                             disable_tqdm=True, max_steps=1)
    return Trainer(model=model, args=args, train_dataset=ToyDataset())


def test_taylor_and_agp_through_the_trainer(tmp_path):
    model = tiny_bert().train()
    trainer = make_trainer(model, tmp_path)
    evaluator = TransformersEvaluator(trainer)
    taylor = TaylorPruner(model, transformer_config_list(model, heads=0.5, ffn=0.5), evaluator, training_steps=2)
    pruner = AGPPruner(taylor, interval_steps=2, total_times=2)
    _, masks = pruner.compress()
    assert evaluator.step_count == 4
    layout = model_layout(model)
    assert zero_fraction(masks[layout.blocks[0].ffn_in]["weight"]) == 0.5
    assert trainer.args.max_steps == 1  # the user's arguments are restored


def test_slim_and_movement_through_the_trainer(tmp_path):
    model = tiny_bert().train()
    evaluator = TransformersEvaluator(make_trainer(model, tmp_path))
    slim = SlimPruner(model, [{"op_types": ["LayerNorm"], "sparse_ratio": 0.25}], evaluator, training_steps=3,
                      regular_scale=0.001)
    _, masks = slim.compress()
    assert all(zero_fraction(t["weight"]) == 0.25 for t in masks.values())
    slim.unwrap_model()
    model2 = tiny_bert().train()
    evaluator2 = TransformersEvaluator(make_trainer(model2, tmp_path))
    movement = MovementPruner(model2, transformer_config_list(model2, ffn=0.5), evaluator2, warmup_step=1,
                              cooldown_begin_step=3)
    _, masks = movement.compress()
    assert evaluator2.step_count == 3
    assert zero_fraction(masks[model_layout(model2).blocks[1].ffn_in]["weight"]) == 0.5


def test_the_trainer_must_hold_the_same_model(tmp_path):
    from hubcompress.errors import CompressionError

    trainer = make_trainer(tiny_bert(), tmp_path)
    with pytest.raises(CompressionError, match="same model"):
        TaylorPruner(tiny_bert(), [{"op_types": ["Linear"], "sparse_ratio": 0.5}], TransformersEvaluator(trainer),
                     training_steps=1)
