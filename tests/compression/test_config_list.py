"""Config-list keys, selection, templates, NNI 2.x translation and every error of point 3."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from hubcompress.compression.config import (
    HubcompressDeprecationWarning,
    PruningSetting,
    canonicalize_config_list,
)
from hubcompress.compression.pruning import L1NormPruner, LevelPruner
from hubcompress.errors import ConfigListError


def canon(model, config_list):
    return canonicalize_config_list(model, config_list, "pruning")


def test_selection_union_intersection_and_exclusions(conv_net):
    cfg = canon(conv_net, [{"op_names": ["conv1"], "op_names_re": ["conv[23]"], "op_types": ["Conv2d"],
                            "exclude_op_names": ["conv3"], "sparse_ratio": 0.5}])
    assert sorted(cfg) == ["conv1", "conv2"]
    cfg = canon(conv_net, [{"op_types": ["Conv2d", "Linear"], "exclude_op_types": ["Linear"],
                            "exclude_op_names_re": ["conv1"], "sparse_ratio": 0.5}])
    assert sorted(cfg) == ["conv2", "conv3"]


def test_template_shortcuts_reach_only_targets_with_the_key(conv_net):
    cfg = canon(conv_net, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5, "max_sparse_ratio": 0.8}])
    assert cfg["bn1"]["weight"].setting["sparse_ratio"] == 0.5
    assert cfg["bn1"]["weight"].setting["max_sparse_ratio"] == 0.8
    assert "sparse_ratio" not in cfg["bn1"]["bias"].setting
    assert cfg["bn1"]["bias"].setting["align"] == {"module_name": None, "target_name": "weight", "dims": [0]}


def test_target_names_and_target_settings(conv_net):
    cfg = canon(conv_net, [{"op_names": ["fc"], "target_names": ["weight", "_input_", "_output_"],
                            "target_settings": {"_input_": {"sparse_ratio": 0.25, "granularity": "per_channel"}},
                            "sparse_ratio": 0.5}])
    assert set(cfg["fc"]) == {"weight", "_input_", "_output_"}
    assert cfg["fc"]["_input_"].setting["sparse_ratio"] == 0.25  # target_settings win over shortcuts
    assert cfg["fc"]["_output_"].setting["sparse_ratio"] == 0.5


@pytest.mark.parametrize("name,position,key", [
    ("_input_", 0, None), ("_input_0", 0, None), ("_input_input", 0, "input"),
    ("_output_", 0, None), ("_output_1", 1, None), ("_output_logits", None, "logits"),
])
def test_activation_target_names(conv_net, name, position, key):
    cfg = canon(conv_net, [{"op_names": ["fc"], "target_names": [name], "sparse_ratio": 0.5}])
    ref = cfg["fc"][name].ref
    assert ref.is_activation and ref.position == position and ref.key == key


def test_buffers_are_targets(conv_net):
    cfg = canon(conv_net, [{"op_names": ["bn1"], "target_names": ["running_var"], "sparse_ratio": 0.5}])
    assert cfg["bn1"]["running_var"].ref.type.value == "buffer"


def test_every_pruning_key_is_accepted(conv_net):
    cfg = canon(conv_net, [
        {"op_names": ["conv1", "conv2"], "sparse_ratio": 0.5, "min_sparse_ratio": 0.1, "max_sparse_ratio": 0.9,
         "dependency_group_id": "res", "global_group_id": "g", "internal_metric_block": 2,
         "granularity": "out_channel", "apply_method": "mul", "target_names": ["weight"]},
        {"op_names": ["conv3"], "sparse_threshold": 0.1, "granularity": [2, -1, -1, -1]},
        {"op_names": ["bn3"], "target_names": ["weight"],
         "align": {"module_name": "conv3", "target_name": "weight", "dims": [0]}},
    ])
    assert cfg["conv1"]["weight"].setting["internal_metric_block"] == 2
    assert cfg["conv3"]["weight"].setting["granularity"] == [2, -1, -1, -1]


def test_later_config_touching_a_target_warns_and_keeps_the_first(conv_net):
    with pytest.warns(UserWarning, match="already set by config_list\\[0\\]"):
        cfg = canon(conv_net, [{"op_names": ["fc"], "sparse_ratio": 0.5},
                               {"op_types": ["Linear", "Conv2d"], "sparse_ratio": 0.2}])
    assert cfg["fc"]["weight"].setting["sparse_ratio"] == 0.5
    assert cfg["conv1"]["weight"].setting["sparse_ratio"] == 0.2


def test_nni2_keys_are_translated_with_a_deprecation_warning(conv_net):
    with pytest.warns(HubcompressDeprecationWarning, match="sparsity"):
        cfg = canon(conv_net, [{"sparsity": 0.5, "op_types": ["Conv2d"]}, {"exclude": True, "op_names": ["conv2"]}])
    assert sorted(cfg) == ["conv1", "conv3"]
    with pytest.warns(HubcompressDeprecationWarning, match="total_sparsity"):
        cfg = canon(conv_net, [{"total_sparsity": 0.3, "op_types": ["Conv2d"], "op_partial_names": ["conv"]}])
    assert cfg["conv1"]["weight"].setting["global_group_id"] == cfg["conv3"]["weight"].setting["global_group_id"]
    with pytest.warns(HubcompressDeprecationWarning, match="max_sparsity_per_layer"):
        cfg = canon(conv_net, [{"sparsity_per_layer": 0.3, "max_sparsity_per_layer": 0.5, "op_types": ["Linear"]}])
    assert cfg["fc"]["weight"].setting["max_sparse_ratio"] == 0.5


def test_nni2_quantization_keys_translate(conv_net):
    from hubcompress.compression.config import translate_nni2

    with pytest.warns(HubcompressDeprecationWarning):
        out = translate_nni2([{"quant_types": ["weight", "input"], "quant_bits": {"weight": 8, "input": 8},
                               "op_types": ["Conv2d"]}])
    assert out[0]["target_names"] == ["weight", "_input_"]
    assert out[0]["target_settings"] == {"weight": {"quant_dtype": "int8"}, "_input_": {"quant_dtype": "int8"}}


# --- errors: each names the index, the key, what is wrong and what to do --------------------

def error_of(model, config_list) -> str:
    with pytest.raises(ConfigListError) as info:
        canon(model, config_list)
    return str(info.value)


def test_unknown_key_suggests_the_closest(conv_net):
    msg = error_of(conv_net, [{"op_types": ["Conv2d"], "sparse_ration": 0.5}])
    assert "config_list[0]" in msg and "'sparse_ration'" in msg and "did you mean 'sparse_ratio'" in msg


def test_key_of_another_compressor_kind(conv_net):
    msg = error_of(conv_net, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "quant_dtype": "int8"}])
    assert "'quant_dtype'" in msg and "quantization" in msg


@pytest.mark.parametrize("config,key,words", [
    ({"op_types": "Conv2d", "sparse_ratio": 0.5}, "op_types", "list of strings"),
    ({"op_types": ["Conv2d"], "sparse_ratio": "half"}, "sparse_ratio", "must be a number"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 1.5}, "sparse_ratio", "must be in [0, 1]"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "max_sparse_ratio": -0.1}, "max_sparse_ratio", "[0, 1]"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "granularity": "per_chanel"}, "granularity", "per_channel"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "internal_metric_block": 0}, "internal_metric_block", "positive"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "apply_method": "zero"}, "apply_method", "mul"),
    ({"op_types": ["Conv2d"], "sparse_ratio": 0.5, "global_group_id": 1.5}, "global_group_id", "int or a string"),
])
def test_wrong_types_and_ranges(conv_net, config, key, words):
    msg = error_of(conv_net, [{"op_types": ["Linear"], "sparse_ratio": 0.1}, config])
    assert "config_list[1]" in msg and repr(key) in msg and words in msg


def test_ratio_and_threshold_together(conv_net):
    msg = error_of(conv_net, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5, "sparse_threshold": 0.1}])
    assert "'sparse_threshold'" in msg and "keep one" in msg


def test_names_that_select_nothing_list_the_closest(conv_net):
    msg = error_of(conv_net, [{"op_names": ["conv_1"], "sparse_ratio": 0.5}])
    assert "no module named 'conv_1'" in msg and "conv1" in msg and "'op_names'" in msg
    msg = error_of(conv_net, [{"op_names_re": ["^cnv"], "sparse_ratio": 0.5}])
    assert "matches no module" in msg and "'op_names_re'" in msg
    msg = error_of(conv_net, [{"op_types": ["Conv3d"], "sparse_ratio": 0.5}])
    assert "no module of type 'Conv3d'" in msg and "Conv2d" in msg
    msg = error_of(conv_net, [{"op_types": ["Conv2d"], "exclude_op_names": ["conv9"], "sparse_ratio": 0.5}])
    assert "exclude_op_names" in msg
    msg = error_of(conv_net, [{"op_names": ["conv1"], "exclude_op_names": ["conv1"], "sparse_ratio": 0.5}])
    assert "selects no module once the exclusions" in msg
    msg = error_of(conv_net, [{"sparse_ratio": 0.5}])
    assert "at least one of op_types" in msg


def test_unregistered_class_shows_how_to_register(conv_net):
    msg = error_of(conv_net, [{"op_types": ["ReLU"], "sparse_ratio": 0.5}])
    assert "ReLU" in msg and "PruningSetting.register('ReLU'" in msg


def test_register_a_custom_class():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.randn(6))

        def forward(self, x):
            return x * self.gain

    net = nn.Sequential(Scale())
    PruningSetting.register("Scale", {"gain": PruningSetting.weight_default()})
    _, masks = LevelPruner(net, [{"op_types": ["Scale"], "sparse_ratio": 0.5}]).compress()
    assert masks["0"]["gain"].sum() == 3


def test_missing_targets(conv_net):
    msg = error_of(conv_net, [{"op_names": ["fc"], "target_names": ["weights"], "sparse_ratio": 0.5}])
    assert "no parameter or buffer 'weights'" in msg and "'target_names'" in msg
    msg = error_of(conv_net, [{"op_names": ["fc"], "target_names": ["_input_x"], "sparse_ratio": 0.5}])
    assert "no argument 'x'" in msg


def test_align_to_missing_module_or_target(conv_net):
    msg = error_of(conv_net, [{"op_names": ["conv1"], "sparse_ratio": 0.5},
                              {"op_names": ["bn1"], "target_names": ["weight"],
                               "align": {"module_name": "conv7", "target_name": "weight", "dims": [0]}}])
    assert "'align'" in msg and "conv7" in msg and "does not exist" in msg
    msg = error_of(conv_net, [{"op_names": ["conv1"], "sparse_ratio": 0.5},
                              {"op_names": ["bn1"], "target_names": ["weight"],
                               "align": {"module_name": "conv2", "target_name": "weight", "dims": [0]}}])
    assert "not configured" in msg
    msg = error_of(conv_net, [{"op_names": ["conv1"], "sparse_ratio": 0.5},
                              {"op_names": ["bn1"], "target_names": ["weight"],
                               "align": {"module_name": "conv1", "target_name": "weight", "dims": [5]}}])
    assert "out of range" in msg


def test_group_members_whose_metric_shapes_disagree(conv_net):
    pruner = L1NormPruner(conv_net, [{"op_names": ["conv2", "conv3"], "sparse_ratio": 0.5,
                                      "dependency_group_id": "bad"}])
    with pytest.raises(ConfigListError, match=re.escape("metric shapes disagree")):
        pruner.compress()


def test_a_config_that_prunes_nothing_is_an_error(conv_net):
    msg = error_of(conv_net, [{"op_types": ["Conv2d"]}])
    assert "compresses nothing" in msg and "sparse_ratio" in msg


def test_granularity_that_does_not_fit(conv_net):
    msg = error_of(conv_net, [{"op_names": ["conv1"], "sparse_ratio": 0.5, "granularity": [3, -1, -1, -1]}])
    assert "does not divide" in msg and "'granularity'" in msg
    msg = error_of(conv_net, [{"op_names": ["bn1"], "sparse_ratio": 0.5, "granularity": "in_channel"}])
    assert "in_channel" in msg


def test_not_a_list():
    with pytest.raises(ConfigListError, match="non-empty list"):
        canon(nn.Linear(2, 2), {"op_types": ["Linear"]})
    with pytest.raises(ConfigListError, match=re.escape("config_list[0]: must be a dict")):
        canon(nn.Sequential(nn.Linear(2, 2)), ["Linear"])
