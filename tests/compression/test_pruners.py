"""Every pruner on a conv net with BatchNorm and a residual add: achieved ratios, groups, align,
schedules, fusion, and the evaluator hook-in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hubcompress.compression.pruning import (
    AGPPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LevelPruner,
    LinearPruner,
    MovementPruner,
    SlimPruner,
    TaylorPruner,
)
from hubcompress.errors import CompressionError

from .helpers import conv_evaluator, zero_fraction

ONE_SHOT = [LevelPruner, L1NormPruner, L2NormPruner, FPGMPruner]


@pytest.mark.parametrize("pruner_cls", ONE_SHOT)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_one_shot_achieves_the_requested_ratio_per_target(conv_net, pruner_cls, ratio):
    _, masks = pruner_cls(conv_net, [{"op_types": ["Conv2d", "Linear"], "sparse_ratio": ratio}]).compress()
    for name in ("conv1", "conv2", "conv3", "fc"):
        weight = getattr(conv_net, name).weight
        blocks = weight.numel() if pruner_cls is LevelPruner else weight.shape[0]
        assert zero_fraction(masks[name]["weight"]) == pytest.approx(round(ratio * blocks) / blocks), name
        if pruner_cls is not LevelPruner:  # whole output channels, and the bias follows
            w = masks[name]["weight"]
            rows = w.flatten(1)
            assert torch.all((rows.sum(1) == 0) | (rows.sum(1) == rows.shape[1]))
            assert torch.equal(masks[name]["bias"], (rows.sum(1) > 0).float())


def test_l1_prunes_the_smallest_channels():
    lin = nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0] * 4, [0.1] * 4, [2.0] * 4, [0.2] * 4]))
    _, masks = L1NormPruner(nn.Sequential(lin), [{"op_types": ["Linear"], "sparse_ratio": 0.5}]).compress()
    assert masks["0"]["weight"][:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_granularity_in_channel_and_blocks(conv_net):
    _, masks = L1NormPruner(conv_net, [
        {"op_names": ["fc"], "sparse_ratio": 0.5, "granularity": "in_channel"},
        {"op_names": ["conv3"], "sparse_ratio": 0.5, "granularity": [4, -1, -1, -1]},
    ]).compress()
    cols = masks["fc"]["weight"]
    assert torch.all(cols == cols[0:1])  # whole input columns
    assert zero_fraction(masks["fc"]["weight"]) == 0.5
    blocks = masks["conv3"]["weight"].flatten(1).amax(1).reshape(4, 4)
    assert torch.all((blocks.sum(1) == 0) | (blocks.sum(1) == 4))  # whole blocks of 4 channels
    assert zero_fraction(masks["conv3"]["weight"]) == 0.5
    assert "bias" in masks["fc"] and masks["fc"]["bias"].sum() == 10  # no output row is empty


def test_threshold_and_its_ratio_clamps():
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0] * 3, [0.1] * 3, [2.0] * 3, [0.2] * 3]))
    net = nn.Sequential(lin)
    _, masks = L1NormPruner(net, [{"op_types": ["Linear"], "sparse_threshold": 0.5}]).compress()
    assert masks["0"]["weight"][:, 0].tolist() == [1.0, 0.0, 1.0, 1.0]  # row L1 norms 3, 0.3, 6, 0.6
    net2 = nn.Sequential(nn.Linear(3, 4))
    net2[0].weight.data.copy_(lin.weight.data)
    _, masks = L1NormPruner(net2, [{"op_types": ["Linear"], "sparse_threshold": 100.0,
                                    "max_sparse_ratio": 0.75}]).compress()
    assert zero_fraction(masks["0"]["weight"]) == 0.75  # the cap wins over a threshold that prunes all


def test_min_and_max_clamp_a_ratio(conv_net):
    _, masks = L1NormPruner(conv_net, [{"op_names": ["conv3"], "sparse_ratio": 0.9, "max_sparse_ratio": 0.5},
                                       {"op_names": ["conv2"], "sparse_ratio": 0.1, "min_sparse_ratio": 0.25}]
                            ).compress()
    assert zero_fraction(masks["conv3"]["weight"]) == 0.5
    assert zero_fraction(masks["conv2"]["weight"]) == 0.25


def test_dependency_group_gives_identical_masks_over_a_residual_add(conv_net):
    _, masks = L1NormPruner(conv_net, [{"op_names": ["conv1", "conv2"], "sparse_ratio": 0.5,
                                        "dependency_group_id": "residual"}]).compress()
    c1 = masks["conv1"]["weight"].flatten(1).amax(1)
    c2 = masks["conv2"]["weight"].flatten(1).amax(1)
    assert torch.equal(c1, c2) and c1.sum() == 4


def test_batchnorm_aligned_to_its_conv(conv_net):
    _, masks = L1NormPruner(conv_net, [
        {"op_names": ["conv3"], "sparse_ratio": 0.5},
        {"op_names": ["bn3"], "target_names": ["weight", "bias"],
         "target_settings": {"weight": {"align": {"module_name": "conv3", "target_name": "weight", "dims": [0]}}}},
    ]).compress()
    channels = masks["conv3"]["weight"].flatten(1).amax(1)
    assert torch.equal(masks["bn3"]["weight"], channels)
    assert torch.equal(masks["bn3"]["bias"], channels)


def test_internal_metric_block_prunes_each_block_equally(conv_net):
    _, masks = L1NormPruner(conv_net, [{"op_names": ["conv3"], "sparse_ratio": 0.5,
                                        "internal_metric_block": 4}]).compress()
    per_block = masks["conv3"]["weight"].flatten(1).amax(1).reshape(4, 4).sum(1)
    assert per_block.tolist() == [2.0, 2.0, 2.0, 2.0]


def test_global_group_reaches_the_ratio_over_its_elements_and_normalises(conv_net):
    with torch.no_grad():
        conv_net.conv2.weight.mul_(0.001)  # a small-valued layer must not lose by scale alone
    _, masks = L1NormPruner(conv_net, [{"op_names": ["conv2", "conv3"], "sparse_ratio": 0.5,
                                        "global_group_id": "g"}]).compress()
    w2, w3 = masks["conv2"]["weight"], masks["conv3"]["weight"]
    total = 1.0 - float((w2.sum() + w3.sum()) / (w2.numel() + w3.numel()))
    assert total == pytest.approx(0.5, abs=1 / 24)
    assert 0.0 < zero_fraction(w2) < 1.0


def test_global_group_honours_max_sparse_ratio(conv_net):
    with torch.no_grad():
        conv_net.conv2.weight.mul_(0.001)
        conv_net.conv2.weight[0].mul_(0.0001)
    _, masks = L1NormPruner(conv_net, [
        {"op_names": ["conv2"], "sparse_ratio": 0.6, "global_group_id": "g", "max_sparse_ratio": 0.25},
        {"op_names": ["conv3"], "sparse_ratio": 0.6, "global_group_id": "g"},
    ]).compress()
    assert zero_fraction(masks["conv2"]["weight"]) <= 0.25
    w2, w3 = masks["conv2"]["weight"], masks["conv3"]["weight"]
    assert 1.0 - float((w2.sum() + w3.sum()) / (w2.numel() + w3.numel())) == pytest.approx(0.6, abs=1 / 24)


def test_global_group_needs_one_ratio(conv_net):
    from hubcompress.errors import ConfigListError

    pruner = L1NormPruner(conv_net, [{"op_names": ["conv2"], "sparse_ratio": 0.6, "global_group_id": "g"},
                                     {"op_names": ["conv3"], "sparse_ratio": 0.3, "global_group_id": "g"}])
    with pytest.raises(ConfigListError, match="one shared sparse_ratio"):
        pruner.compress()


def test_taylor_on_parameters_and_activations_with_a_loop_that_ignores_max_steps(conv_net):
    conv_net.train()
    evaluator = conv_evaluator(conv_net)
    pruner = TaylorPruner(conv_net, [{"op_names": ["conv2", "conv3"], "sparse_ratio": 0.5},
                                     {"op_names": ["fc"], "target_names": ["_input_"], "sparse_ratio": 0.25}],
                          evaluator, training_steps=5)
    _, masks = pruner.compress()
    assert evaluator.step_count == 5
    assert zero_fraction(masks["conv2"]["weight"]) == 0.5
    assert masks["fc"]["_input_"].shape == (16,) and zero_fraction(masks["fc"]["_input_"]) == 0.25
    assert len(evaluator.optimizers.param_groups) == 1  # the user's optimizer is left as it was


def test_taylor_needs_an_evaluator(conv_net):
    with pytest.raises(CompressionError, match="pass an evaluator"):
        TaylorPruner(conv_net, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], None, training_steps=2)


def test_slim_learns_factors_prunes_the_small_ones_and_folds_them(conv_net):
    conv_net.train()
    names = [n for n, _ in conv_net.named_parameters()]
    evaluator = conv_evaluator(conv_net, lr=0.05)
    pruner = SlimPruner(conv_net, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5}], evaluator,
                        training_steps=6, regular_scale=0.01)
    _, masks = pruner.compress()
    for bn in ("bn1", "bn2", "bn3"):
        assert zero_fraction(masks[bn]["weight"]) == 0.5
        assert torch.equal(masks[bn]["bias"], masks[bn]["weight"])
    pruner.unwrap_model()
    assert [n for n, _ in conv_net.named_parameters()] == names  # no factor left behind


def test_movement_scores_and_cubic_schedule(conv_net):
    conv_net.train()
    evaluator = conv_evaluator(conv_net)
    pruner = MovementPruner(conv_net, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], evaluator,
                            warmup_step=2, cooldown_begin_step=6)
    assert [pruner.current_ratio_scale(s) for s in (0, 2, 4, 6, 9)] == [0.0, 0.0, 0.875, 1.0, 1.0]
    _, masks = pruner.compress(max_steps=8)
    assert zero_fraction(masks["conv2"]["weight"]) == 0.5
    assert not any("movement_score" in n for n, _ in conv_net.named_parameters())


@pytest.mark.parametrize("scheduler", [LinearPruner, AGPPruner])
@pytest.mark.parametrize("inner", ["l1", "taylor"])
def test_scheduled_pruners_raise_the_ratio_and_keep_pruned_entries_pruned(conv_net, scheduler, inner):
    conv_net.train()
    evaluator = conv_evaluator(conv_net)
    config = [{"op_names": ["conv3"], "sparse_ratio": 0.75}]
    inner_pruner = (L1NormPruner(conv_net, config) if inner == "l1"
                    else TaylorPruner(conv_net, config, evaluator, training_steps=2))
    pruner = scheduler(inner_pruner, interval_steps=2, total_times=3, evaluator=evaluator)
    seen = []
    evaluator.patch_optimizer_step(after=[lambda: seen.append(pruner.get_masks().get("conv3", {}).get("weight"))])
    _, masks = pruner.compress()
    # The test's task runs before the scheduler's in each step: seen[k] is the mask after k steps.
    assert seen[0] is None and seen[1] is None
    expected = [pruner.schedule(i / 3) * 0.75 for i in (1, 2, 3)]
    observed = [zero_fraction(seen[2]), zero_fraction(seen[4]), zero_fraction(masks["conv3"]["weight"])]
    assert observed == pytest.approx(expected, abs=1 / 16)
    assert torch.all(seen[4] <= seen[2]) and torch.all(masks["conv3"]["weight"] <= seen[4])


def test_a_schedule_cut_short_right_after_an_update_finishes_on_the_last_measurement(conv_net):
    # Training stops at step 4, just after the second of four updates (every 2 steps): the final
    # update at the full ratio has no new step to measure and decides on the last measured importance.
    conv_net.train()
    evaluator = conv_evaluator(conv_net)
    config = [{"op_names": ["conv3"], "sparse_ratio": 0.75}]
    pruner = AGPPruner(TaylorPruner(conv_net, config, evaluator, training_steps=2), interval_steps=2, total_times=4,
                       evaluator=evaluator)
    _, masks = pruner.compress(max_steps=4)
    assert evaluator.step_count == 4
    assert zero_fraction(masks["conv3"]["weight"]) == pytest.approx(0.75, abs=1 / 16)


def test_fused_pruners_train_once(conv_net):
    conv_net.train()
    evaluator = conv_evaluator(conv_net)
    first = TaylorPruner(conv_net, [{"op_names": ["conv2"], "sparse_ratio": 0.5}], evaluator, training_steps=4)
    second = L1NormPruner.from_compressor(first, [{"op_names": ["conv3"], "sparse_ratio": 0.25}])
    _, masks = second.compress()
    assert evaluator.step_count == 4
    assert zero_fraction(masks["conv2"]["weight"]) == 0.5 and zero_fraction(masks["conv3"]["weight"]) == 0.25


def test_two_pruners_on_one_module_is_an_error(conv_net):
    first = L1NormPruner(conv_net, [{"op_names": ["conv2"], "sparse_ratio": 0.5}])
    with pytest.raises(CompressionError, match="one compressor of each kind"):
        L1NormPruner.from_compressor(first, [{"op_names": ["conv2"], "sparse_ratio": 0.25}])
    with pytest.raises(CompressionError, match="already wrapped"):
        L1NormPruner(conv_net, [{"op_names": ["conv2"], "sparse_ratio": 0.25}])


def test_norm_pruners_cannot_measure_a_lone_activation(conv_net):
    from hubcompress.errors import ConfigListError

    pruner = L1NormPruner(conv_net, [{"op_names": ["fc"], "target_names": ["_input_"], "sparse_ratio": 0.5}])
    with pytest.raises(ConfigListError, match="TaylorPruner"):
        pruner.compress()
