"""Quantizers on a conv net with BatchNorm: scales' shapes, ranges and dtype bounds; PTQ only
observes; QAT's start step and gradients; LSQ's learned scales; errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hubcompress.compression import PtqQuantizer, QATQuantizer, TorchEvaluator
from hubcompress.compression.quantization import QUANT_METHODS, QUANTIZERS, LsqQuantizer, parse_dtype
from hubcompress.errors import CompressionError, ConfigListError

from .helpers import conv_batches, conv_evaluator, conv_training_step

CONFIG = [
    {"op_types": ["Conv2d"], "target_names": ["weight", "_input_"], "quant_dtype": "int8",
     "target_settings": {"weight": {"granularity": "per_channel"}}},
    {"op_names": ["fc"], "target_names": ["weight", "_output_"], "quant_dtype": "int8",
     "target_settings": {"_output_": {"quant_dtype": "uint8", "quant_scheme": "affine"}}},
]
FIXED_GRID = {"dorefa", "bnn"}


def grid_values(space, value):
    """``value`` fake-quantized by the space's method, as integers on its grid."""
    out = QUANT_METHODS[space.method](value, space)
    scale, zp = space.broadcast(space.scale.detach(), out), space.broadcast(space.zero_point, out)
    return out / scale + zp


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_each_quantizer_calibrates_as_configured(conv_net, name):
    conv_net.train()
    quantizer = QUANTIZERS[name](conv_net, CONFIG, conv_evaluator(conv_net))
    _, calibration = quantizer.compress(max_steps=4)
    assert sorted(calibration) == ["conv1", "conv2", "conv3", "fc"]
    assert sorted(calibration["conv2"]) == ["_input_", "weight"] and sorted(calibration["fc"]) == ["_output_", "weight"]
    per_channel = name not in FIXED_GRID
    assert tuple(calibration["conv3"]["weight"]["scale"].shape) == ((16, 1, 1, 1) if per_channel else ())
    assert calibration["conv3"]["_input_"]["scale"].shape == ()
    for module, targets in calibration.items():
        for target, entry in targets.items():
            dt = parse_dtype(entry["quant_dtype"])
            assert torch.all(entry["scale"] > 0), (module, target)
            assert entry["zero_point"].dtype == torch.int32
            assert torch.all((entry["zero_point"] >= dt.qmin) & (entry["zero_point"] <= dt.qmax))
            assert torch.all(entry["tracked_min"] <= entry["tracked_max"])
            assert entry["quant_bits"] == (1 if name == "bnn" else dt.bits)
    assert calibration["fc"]["_output_"]["quant_dtype"] == "uint8"
    assert calibration["fc"]["_output_"]["quant_scheme"] == "affine"
    assert calibration["fc"]["weight"]["quant_scheme"] == "symmetric"
    for space in quantizer._spaces():  # weights land exactly on the integer grid, inside the bounds
        if not space.is_activation:
            q = grid_values(space, quantizer.effective_weight(space))
            assert torch.allclose(q, q.round(), atol=1e-3), space.wrapper.module_name
            assert q.min() >= space.dtype.qmin - 1e-3 and q.max() <= space.dtype.qmax + 1e-3
    assert torch.isfinite(conv_net(torch.randn(2, 3, 8, 8))).all()


def test_qat_ranges_follow_the_data_and_start_step(conv_net):
    conv_net.train()
    evaluator = conv_evaluator(conv_net)
    quantizer = QATQuantizer(conv_net, [{"op_names": ["conv1"], "target_names": ["_input_", "weight"],
                                         "quant_dtype": "int8", "quant_scheme": "symmetric"}],
                             evaluator, quant_start_step=3)
    methods = []
    evaluator.patch_optimizer_step(after=[lambda: methods.append(quantizer._target_spaces["conv1"]["weight"].method)])
    _, calibration = quantizer.compress(max_steps=5)
    # The test's task runs before the quantizer's in each step: methods[k] is the one used in step k + 1.
    assert methods == ["bypass", "bypass", "bypass", "qat_clamp_round", "qat_clamp_round"]
    entry = calibration["conv1"]["_input_"]
    assert -5 < float(entry["tracked_min"]) < -1 and 1 < float(entry["tracked_max"]) < 5  # randn input
    assert float(entry["scale"]) == pytest.approx(max(-entry["tracked_min"], entry["tracked_max"]).item() / 127)
    w = conv_net.conv1.weight.detach()
    assert torch.allclose(calibration["conv1"]["weight"]["tracked_max"], w.max())  # the final weights


def test_qat_straight_through_gradient_reaches_the_weights():
    model = nn.Sequential(nn.Linear(4, 3))
    ev = TorchEvaluator(lambda *a: None, torch.optim.SGD(model.parameters(), lr=0.1), lambda b, m: m(b).sum())
    quantizer = QATQuantizer(model, [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "int4"}], ev)
    quantizer.compress(max_steps=1)  # the loop does nothing: scales come from the weights
    model(torch.randn(5, 4)).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    distinct = QUANT_METHODS["qat_clamp_round"](model[0].weight, quantizer._target_spaces["0"]["weight"]).unique()
    assert len(distinct) <= 15  # int4 narrow range: 15 levels


def test_granularities_blocks_and_int4(conv_net):
    config = [{"op_names": ["conv3"], "target_names": ["weight"], "quant_dtype": "int4",
               "granularity": [4, -1, -1, -1]},
              {"op_names": ["fc"], "target_names": ["weight", "_input_"], "quant_dtype": "uint4",
               "target_settings": {"weight": {"granularity": "in_channel"},
                                   "_input_": {"granularity": "per_channel"}}}]
    conv_net.train()
    _, calibration = QATQuantizer(conv_net, config, conv_evaluator(conv_net)).compress(max_steps=2)
    assert tuple(calibration["conv3"]["weight"]["scale"].shape) == (4, 1, 1, 1)
    assert tuple(calibration["fc"]["weight"]["scale"].shape) == (1, 16)
    assert tuple(calibration["fc"]["_input_"]["scale"].shape) == (1, 16)
    assert torch.all(calibration["fc"]["weight"]["zero_point"] == 8)  # uint4 symmetric: mid-grid


def test_ptq_observes_only_and_changes_nothing(conv_net):
    conv_net.train()
    before = {k: v.clone() for k, v in conv_net.state_dict().items()}
    optimizer = torch.optim.Adam(conv_net.parameters(), lr=0.1)

    def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        model.train()  # a loop that would move BatchNorm statistics
        for batch in conv_batches(8):
            optimizers.zero_grad()
            training_step(batch, model).backward()
            optimizers.step()

    evaluator = TorchEvaluator(training_func, optimizer, conv_training_step)
    quantizer = PtqQuantizer(conv_net, [{"op_types": ["Conv2d", "Linear"], "quant_dtype": "int8",
                                         "target_names": ["_input_", "weight", "_output_"]}], evaluator)
    _, calibration = quantizer.compress(max_steps=6)
    assert evaluator.step_count == 6
    assert all(torch.equal(before[k], v) for k, v in conv_net.state_dict().items())
    assert not optimizer.state  # no real step was taken
    assert "step" not in optimizer.__dict__  # the optimizer is given back as it was
    assert len(calibration) == 4 and float(calibration["fc"]["_output_"]["scale"]) > 0
    spaces = quantizer._target_spaces["conv2"]
    assert spaces["_output_"].method == "clamp_round"
    assert float(spaces["_input_"].tracked_min) >= 0  # conv2 reads ReLU outputs


def test_ptq_refuses_to_share_a_run_with_training_compressors(conv_net):
    from hubcompress.compression import TaylorPruner

    evaluator = conv_evaluator(conv_net)
    pruner = TaylorPruner(conv_net, [{"op_names": ["conv2"], "sparse_ratio": 0.5}], evaluator, training_steps=2)
    ptq = PtqQuantizer.from_compressor(pruner, [{"op_names": ["conv3"], "quant_dtype": "int8"}])
    with pytest.raises(CompressionError, match="only observes"):
        ptq.compress(max_steps=2)


def test_lsq_scales_are_learned_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    data = [(torch.randn(16, 8), torch.randint(0, 2, (16,))) for _ in range(4)]

    def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        for i in range(max_steps):
            optimizers.zero_grad()
            training_step(data[i % 4], model).backward()
            optimizers.step()

    evaluator = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=0.05),
                               lambda b, m: nn.functional.cross_entropy(m(b[0]), b[1]))
    quantizer = LsqQuantizer(model, [{"op_types": ["Linear"], "target_names": ["weight", "_input_"],
                                      "quant_dtype": "int8"}], evaluator)
    initial = None

    def remember():
        nonlocal initial
        if initial is None:
            initial = model[0]._hc_wrapper.weight_scale.detach().clone()

    evaluator.patch_optimizer_step(before=[remember])
    _, calibration = quantizer.compress(max_steps=5)
    learned = model[0]._hc_wrapper.weight_scale
    assert isinstance(learned, nn.Parameter) and not torch.equal(learned.detach(), initial)
    assert torch.equal(calibration["0"]["weight"]["scale"], learned.detach().abs())
    assert len(evaluator.optimizers.param_groups) == 1  # the scales' group is removed afterwards


def test_lsq_per_channel_activations_need_track_forward():
    model = nn.Sequential(nn.Linear(4, 4))
    ev = TorchEvaluator(lambda *a: None, torch.optim.SGD(model.parameters(), lr=0.1), lambda b, m: m(b).sum())
    config = [{"op_types": ["Linear"], "target_names": ["_input_"], "quant_dtype": "int8",
               "granularity": "per_channel"}]
    with pytest.raises(CompressionError, match="track_forward"):
        LsqQuantizer(model, config, ev).compress(max_steps=1)


@pytest.mark.parametrize("config,key,match", [
    ({"op_types": ["Linear"], "quant_dtype": "int9x"}, "quant_dtype", "unknown quant_dtype"),
    ({"op_types": ["Linear"], "quant_dtype": "int8", "quant_scheme": "asym"}, "quant_scheme", "affine"),
    ({"op_types": ["Linear"], "quant_dtype": "int8", "target_names": ["_input_"], "granularity": "out_channel"},
     "granularity", "for parameters"),
    ({"op_types": ["Linear"], "quant_dtype": "int8", "apply_method": "round"}, "apply_method", "qat_clamp_round"),
    ({"op_types": ["Linear"], "target_names": ["weight"]}, None, "quant_dtype"),
    ({"op_types": ["Linear"], "quant_dtype": "int8", "sparse_ratio": 0.5}, "sparse_ratio", "pruning"),
])
def test_config_errors_name_index_and_key(config, key, match):
    model = nn.Sequential(nn.Linear(4, 4))
    ev = TorchEvaluator(lambda *a: None, torch.optim.SGD(model.parameters(), lr=0.1), lambda b, m: m(b).sum())
    with pytest.raises(ConfigListError, match=match) as info:
        QATQuantizer(model, [config], ev)
    assert info.value.index == 0 and info.value.key == key


def test_fixed_grid_weights_need_a_signed_dtype():
    model = nn.Sequential(nn.Linear(4, 4))
    ev = TorchEvaluator(lambda *a: None, torch.optim.SGD(model.parameters(), lr=0.1), lambda b, m: m(b).sum())
    with pytest.raises(ConfigListError, match="signed"):
        QUANTIZERS["dorefa"](model, [{"op_types": ["Linear"], "target_names": ["weight"], "quant_dtype": "uint8"}], ev)


def test_ptq_through_the_trainer_takes_no_step(tmp_path):
    from hubcompress.compression import TransformersEvaluator

    from ..conftest import tiny_bert
    from .test_transformers import make_trainer

    model = tiny_bert().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluator = TransformersEvaluator(make_trainer(model, tmp_path))
    quantizer = PtqQuantizer(model, [{"op_types": ["Linear"], "target_names": ["_input_"], "quant_dtype": "uint8"}],
                             evaluator)
    _, calibration = quantizer.compress(max_steps=3)
    assert evaluator.step_count == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(calibration) == sum(isinstance(m, nn.Linear) for m in model.modules())
    assert all(float(e["_input_"]["tracked_min"]) < float(e["_input_"]["tracked_max"]) for e in calibration.values())


def test_any_parameter_or_buffer_is_a_target():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.BatchNorm1d(5))
    ev = TorchEvaluator(lambda *a: None, torch.optim.SGD(model.parameters(), lr=0.1), lambda b, m: m(b).sum())
    config = [{"op_types": ["Embedding"], "quant_dtype": "int8", "granularity": "per_channel"},
              {"op_types": ["LayerNorm"], "target_names": ["weight", "bias"], "quant_dtype": "int4"},
              {"op_types": ["BatchNorm1d"], "target_names": ["running_var"], "quant_dtype": "uint8"}]
    quantizer = QATQuantizer(model, config, ev)
    _, calibration = quantizer.compress(max_steps=1)
    assert tuple(calibration["0"]["weight"]["scale"].shape) == (1, 4)  # an embedding's channels are dim 1
    assert sorted(calibration["1"]) == ["bias", "weight"] and calibration["1"]["weight"]["quant_bits"] == 4
    assert calibration["2"]["running_var"]["quant_dtype"] == "uint8"
    assert model(torch.randint(0, 10, (2, 5))).shape == (2, 5, 4)
