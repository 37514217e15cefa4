"""NNI 3.0's own compression tests (``test/algo/compression``), ported: the same call forms and
the same expectations, on hubcompress. MNIST is replaced by random tensors of its shapes, the
step counts are cut so the module runs in seconds, and ModelSpeedup checks on CNNs are left to
tests/speedup. Lightning variants skip where lightning is not installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn
from torch.nn.functional import conv2d

from hubcompress.compression import (
    Adaptive1dLayerwiseDistiller,
    AGPPruner,
    BNNQuantizer,
    DoReFaQuantizer,
    DynamicLayerwiseDistiller,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LevelPruner,
    LinearPruner,
    LsqQuantizer,
    MovementPruner,
    PtqQuantizer,
    QATQuantizer,
    Quantizer,
    SlimPruner,
    TaylorPruner,
)
from hubcompress.compression.config import canonicalize_config_list
from hubcompress.compression.pruning import Pruner
from hubcompress.compression.utils import (
    auto_set_denpendency_group_ids,
    compute_sparsity_compact2origin,
    compute_sparsity_mask2compact,
    find_dependencies,
)

from .nni_assets import SimpleTorchModel, create_evaluator, create_model



def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_LIGHTNING = _installed("lightning")
NEEDS_LIGHTNING = pytest.mark.skipif(not HAS_LIGHTNING,
                                     reason="lightning is not installed (pip install 'hubcompress[lightning]')")


def runs(*rows: tuple) -> list:
    """Parameter rows; those whose first value is 'lightning' skip without lightning."""
    return [pytest.param(*row, marks=NEEDS_LIGHTNING) if row[0] == "lightning" else pytest.param(*row)
            for row in rows]


MODEL_TYPES = runs(("lightning",), ("pytorch",))
PRUNERS = {"level": LevelPruner, "l1": L1NormPruner, "l2": L2NormPruner, "fpgm": FPGMPruner, "slim": SlimPruner,
           "taylor": TaylorPruner, "linear": LinearPruner, "agp": AGPPruner}


def ratio(mask: torch.Tensor) -> float:
    return 1 - float(mask.sum()) / mask.numel()


def check_masks(masks, model_type: str) -> None:
    """NNI's check: 75% of every conv and of fc1 pruned by output channel, biases following
    their weights, conv2 and conv3 (added together) keeping the same channels."""
    p = "model." if model_type == "lightning" else ""
    for name in ("conv1", "conv2", "conv3", "fc1"):
        assert ratio(masks[p + name]["weight"]) == 0.75, name
        weight = masks[p + name]["weight"]
        kept = weight.sum(list(range(1, weight.dim()))).bool().float()
        assert torch.equal(kept, masks[p + name]["bias"]), name
    kept = lambda n: masks[p + n]["weight"].sum([1, 2, 3]).bool()  # noqa: E731
    assert torch.equal(kept("conv2"), kept("conv3"))
    # conv2 has 4 groups, and conv1 feeds it: each group keeps the same number of channels.
    for name in ("conv1", "conv2"):
        assert set(kept(name).reshape(4, -1).sum(1).tolist()) == {kept(name).sum().item() // 4}, name


# --- base/test_compressor.py ---------------------------------------------------------------------
def test_compressor():
    model = SimpleTorchModel()
    pruner = Pruner(model, [{"op_names": ["conv1", "fc1"], "target_names": ["weight", "bias"], "sparse_ratio": 0.4}])
    ones = {name: {t: torch.ones_like(getattr(model, name).get_parameter(t)) for t in ("weight", "bias")}
            for name in ("conv1", "fc1")}
    pruner.update_masks(ones)
    masks = pruner.get_masks()
    assert all(torch.equal(masks[m][t], ones[m][t]) for m in ones for t in ones[m])
    quantizer = Quantizer.from_compressor(pruner, [{"op_names": ["conv2", "fc1"], "target_names": [
        "_input_", "weight", "_output_"], "quant_dtype": "int8", "quant_scheme": "affine"}])
    assert quantizer.bound_model is model and quantizer.evaluator is None


# --- base/test_setting.py ------------------------------------------------------------------------
def test_setting():
    model = nn.Sequential(nn.Linear(1, 1))
    config = {"op_types": ["Linear"], "target_names": ["weight", "bias"], "sparse_ratio": 0.5,
              "target_settings": {"bias": {"sparse_ratio": 0.6}}}
    setting = canonicalize_config_list(model, [config], "pruning")["0"]
    assert setting["weight"].setting["sparse_ratio"] == 0.5 and setting["bias"].setting["sparse_ratio"] == 0.6

    config = {"op_types": ["Linear"], "target_names": ["_input_", "weight", "_output_"], "quant_dtype": "uint6",
              "target_settings": {"weight": {"quant_dtype": "int6"}}}
    setting = canonicalize_config_list(model, [config], "quantization")["0"]
    assert setting["_input_"].setting["quant_dtype"] == "uint6" and "sparse_ratio" not in setting["_input_"].setting
    assert setting["weight"].setting["quant_dtype"] == "int6"

    # Distillation needs no registered template: every module class has _output_.
    setting = canonicalize_config_list(model, [{"op_types": ["Linear"], "target_names": ["_output_"],
                                                "lambda": 0.5}], "distillation")["0"]
    assert setting["_output_"].setting["lambda"] == 0.5


# --- base/test_wrapper.py ------------------------------------------------------------------------
def _fake_quant(t: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    return (torch.round(torch.clamp(t / scale + zp, -127, 127)) - zp) * scale


def _calibration(scale: float, zp: int) -> dict:
    return {"scale": torch.tensor(scale), "zero_point": torch.tensor(zp), "quant_dtype": "int8"}


def test_wrapper_forward():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 3))
    conv = net[0]
    x = torch.rand(4, 3, 32, 32)
    pruner = Pruner(net, [{"op_names": ["0"], "target_names": ["_input_", "weight", "bias", "_output_"],
                           "sparse_ratio": 0.5}])

    mask = torch.ones_like(conv.weight)
    mask[:, 1] = 0  # an input-channel mask of the weight is input channel 1 set to zero
    pruner.update_masks({"0": {"weight": mask}})
    expected = conv2d(x * torch.tensor([1.0, 0.0, 1.0])[:, None, None], conv.weight, conv.bias)
    assert torch.allclose(net(x), expected, atol=1e-6)

    mask = torch.ones_like(conv.weight)
    mask[1] = 0  # an output-channel mask leaves only the bias in that channel
    pruner.update_masks({"0": {"weight": mask}})
    expected = conv2d(x, conv.weight, conv.bias)
    expected[:, 1] = conv.bias[1]
    assert torch.allclose(net(x), expected, atol=1e-6)
    pruner.update_masks({"0": {"weight": torch.ones_like(conv.weight)}})

    mask = torch.ones(3, 30, 30)
    mask[1] = 0
    pruner.update_masks({"0": {"_output_": mask}})
    expected = conv2d(x, conv.weight, conv.bias)
    expected[:, 1] = 0
    assert torch.equal(net(x), expected)
    pruner.unwrap_model()

    quantizer = Quantizer(net, [{"op_names": ["0"], "target_names": ["_input_", "weight", "_output_"],
                                 "quant_dtype": "int8", "quant_scheme": "affine"}])
    quantizer.update_calibration_config({"0": {"weight": _calibration(0.5, 10)}})
    assert torch.equal(net(x), conv2d(x, _fake_quant(conv.weight.detach(), 0.5, 10), conv.bias.detach()))
    quantizer.update_calibration_config({"0": {"_output_0": _calibration(0.5, 10)}})
    expected = _fake_quant(conv2d(x, _fake_quant(conv.weight.detach(), 0.5, 10), conv.bias.detach()), 0.5, 10)
    assert torch.equal(net(x), expected)
    quantizer.unwrap_model()

    # Distillation records the output the model returned.
    distiller = DynamicLayerwiseDistiller(net, [{"op_names": ["0"]}], create_evaluator("pytorch", net))
    space = distiller._target_spaces["0"]["_output_"]
    space.recording = True
    assert torch.equal(net(x), space.value)
    distiller.unwrap_model()


def test_wrapper_fused_compress():
    """Quantize the input, mask it, quantize and mask the weight, mask the bias, then quantize
    and mask the output: fake-quantize comes before the mask on every target."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 3))
    conv = net[0]
    pruner = Pruner(net, [{"op_names": ["0"], "target_names": ["_input_", "weight", "bias", "_output_"],
                           "sparse_ratio": 0.5}])
    masks = {"_input_": torch.ones(3, 32, 32), "weight": torch.ones_like(conv.weight),
             "bias": torch.ones_like(conv.bias), "_output_": torch.ones(3, 30, 30)}
    masks["_input_"][0] = 0
    masks["weight"][:, 1] = 0
    masks["weight"][1] = 0
    masks["bias"][1] = 0
    masks["_output_"][0] = 0
    pruner.update_masks({"0": masks})
    quantizer = Quantizer.from_compressor(pruner, [{"op_names": ["0"], "target_names": ["_input_", "weight",
                                                   "_output_"], "quant_dtype": "int8", "quant_scheme": "affine"}])
    quantizer.update_calibration_config({"0": {"_input_0": _calibration(0.4, 5), "weight": _calibration(0.5, 10),
                                               "_output_0": _calibration(0.3, 15)}})
    x = torch.rand(4, 3, 32, 32)
    out = net(x)
    x_q = _fake_quant(x, 0.4, 5)
    x_q[:, 0] = 0
    w = _fake_quant(conv.weight.detach(), 0.5, 10)
    w[1] = 0
    w[:, 1] = 0
    b = conv.bias.detach().clone()
    b[1] = 0
    expected = _fake_quant(conv2d(x_q, w, b), 0.3, 15)
    expected[:, 0] = 0
    assert torch.allclose(out, expected, atol=1e-6)


def test_wrapper_register():
    model = SimpleTorchModel()
    pruner = L1NormPruner(model, [{"op_names": ["conv1", "fc1"], "target_names": ["weight", "bias"],
                                   "sparse_ratio": 0.4}])
    assert set(pruner._wrappers) == {"conv1", "fc1"}
    quantizer = Quantizer.from_compressor(pruner, [{"op_names": ["conv2", "fc1"], "target_names": [
        "_input_", "weight", "_output_"], "quant_dtype": "int8", "quant_scheme": "affine"}])
    assert set(quantizer._wrappers) == {"conv1", "conv2", "fc1"}
    distiller = DynamicLayerwiseDistiller.from_compressor(quantizer, [{"op_names": ["conv3", "fc1"],
                                                                        "target_names": ["_output_"], "lambda": 0.1}],
                                                          evaluator=create_evaluator("pytorch", model))
    assert set(distiller._wrappers) == {"conv1", "conv2", "conv3", "fc1"}


# --- base/test_fused_wrapper.py ------------------------------------------------------------------
def test_fused_wrapper_register():
    model = SimpleTorchModel()
    evaluator = create_evaluator("pytorch", model)
    first = QATQuantizer(model, [{"op_names": ["fc1", "conv1"], "target_names": ["_input_", "_output_"],
                                  "quant_dtype": "int8", "quant_scheme": "affine"}], evaluator)
    assert set(first._wrappers) == {"fc1", "conv1"}
    second = Quantizer.from_compressor(first, [{"op_names": ["fc2", "conv2"], "target_names": [
        "weight", "_input_", "_output_"], "quant_dtype": "int2", "quant_scheme": "affine",
        "fuse_names": [("conv2", "bn2")]}])
    assert {"fc1", "conv1", "fc2", "conv2", "bn2"} <= set(second._wrappers)
    assert second._wrappers["bn2"].fused_source is second._wrappers["conv2"]


# --- pruning/test_pruner.py ----------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("prune_type", ["level", "l1", "l2", "fpgm"])
def test_norm_pruner(model_type: str, prune_type: str):
    model, config_list_dict, dummy_input = create_model(model_type)
    config_list = auto_set_denpendency_group_ids(model, config_list_dict["pruning"], dummy_input)
    pruner = PRUNERS[prune_type](model, config_list)
    pruner.compress()
    pruner.unwrap_model()
    check_masks(pruner.get_masks(), model_type)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("prune_type", ["slim", "taylor"])
def test_slim_taylor_pruner(model_type: str, prune_type: str):
    model, config_list_dict, dummy_input = create_model(model_type)
    evaluator = create_evaluator(model_type, model)
    config_list = auto_set_denpendency_group_ids(model, config_list_dict["pruning"], dummy_input)
    pruner = PRUNERS[prune_type](model, config_list, evaluator=evaluator, training_steps=4)
    pruner.compress()
    pruner.unwrap_model()
    check_masks(pruner.get_masks(), model_type)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_mvp_pruner(model_type: str):
    model, config_list_dict, dummy_input = create_model(model_type)
    evaluator = create_evaluator(model_type, model)
    config_list = auto_set_denpendency_group_ids(model, config_list_dict["pruning"], dummy_input)
    pruner = MovementPruner(model, config_list, evaluator=evaluator, warmup_step=1, cooldown_begin_step=4)
    pruner.compress(5, None)
    pruner.unwrap_model()
    check_masks(pruner.get_masks(), model_type)


# The weight-norm pruners drive the Lightning loop as L1 does: Lightning runs L1, Slim, Taylor.
SCHEDULED = runs(*((m, p, s) for m in ("lightning", "pytorch") for p in ("agp", "linear")
                   for s in ("level", "l1", "l2", "fpgm", "slim", "taylor")
                   if m == "pytorch" or s in ("l1", "slim", "taylor")))


@pytest.mark.parametrize("model_type, prune_type, sub_prune_type", SCHEDULED)
def test_scheduled_pruner(model_type: str, prune_type: str, sub_prune_type: str):
    model, config_list_dict, dummy_input = create_model(model_type)
    evaluator = create_evaluator(model_type, model)
    config_list = auto_set_denpendency_group_ids(model, config_list_dict["pruning"], dummy_input)
    if sub_prune_type in ("slim", "taylor"):
        sub_pruner = PRUNERS[sub_prune_type](model, config_list, evaluator=evaluator, training_steps=2)
        pruner = PRUNERS[prune_type](sub_pruner, interval_steps=2, total_times=3)
    else:
        sub_pruner = PRUNERS[sub_prune_type](model, config_list)
        pruner = PRUNERS[prune_type](sub_pruner, interval_steps=2, total_times=3, evaluator=evaluator)
    pruner.compress(6, None)
    pruner.unwrap_model()
    check_masks(pruner.get_masks(), model_type)


# --- pruning/test_channel_dependency.py (the patterns; NNI checked its speedup graph) ------------
class PatternA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv4 = (nn.Conv2d(3, 16, 3, 1, 1) for _ in range(4))

    def forward(self, x):
        return torch.cat((self.conv1(x), self.conv2(x)), dim=0) + torch.cat((self.conv3(x), self.conv4(x)), dim=0)


class PatternB(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, 1, 1), nn.Conv2d(3, 32, 3, 1, 1)

    def forward(self, x):
        return torch.cat((self.conv1(x), self.conv2(x)), dim=1)


class PatternC(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 3, 1, 1), nn.Conv2d(3, 16, 3, 1, 1)

    def forward(self, x):
        return torch.sum(self.conv1(x), dim=1) + torch.sum(self.conv2(x), dim=1)


@pytest.mark.parametrize("mod, deps", [
    # NNI's speedup graph split this into {conv1, conv2} and {conv3, conv4}; concatenated along
    # the batch and added, all four must keep the same channels, and one set says so.
    (PatternA, [{"conv1", "conv2", "conv3", "conv4"}]),
    (PatternB, []),  # concatenated along the channels: independent
    (PatternC, []),  # the channels are summed away before the add
])
def test_channel_dependency(mod, deps):
    sets, _ = find_dependencies(mod(), (torch.randn(1, 3, 16, 16),))
    assert sets == deps


# --- pruning/test_auto_conv.py: the sparsity counters (its speedup part lives in tests/speedup) --
def test_compute_sparsity_after_l1_pruning():
    class TorchModel1(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, 1)
            self.conv2 = nn.Conv2d(6, 16, 5, 1)
            self.fc1 = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc1(x.flatten(1))

    torch.manual_seed(100)
    model = TorchModel1()
    config_list = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    pruned_model, masks = L1NormPruner(model=model, config_list=config_list).compress()
    sparsity_list = compute_sparsity_mask2compact(pruned_model, masks, config_list)
    assert 0.45 < sparsity_list[0]["total_sparsity"] < 0.55
    compact = TorchModel1()  # what speedup makes of it, by hand: half the filters of each conv
    compact.conv1, compact.conv2 = nn.Conv2d(1, 3, 5, 1), nn.Conv2d(3, 8, 5, 1)
    real = compute_sparsity_compact2origin(TorchModel1(), compact, config_list)
    assert 0.45 < real[0]["total_sparsity"] < 0.75
    assert real[0]["sparse_ratio"] == 0.5  # the config, copied


# --- quantization/*_test.py ----------------------------------------------------------------------
def _quant_config(prefix: str, fc_granularity: str, conv_targets: list[str], dtype: str | None = "int8"):
    return [{"target_names": ["weight"], "op_names": [f"{prefix}fc1", f"{prefix}fc2"], "quant_dtype": dtype,
             "quant_scheme": "affine", "granularity": fc_granularity},
            {"target_names": conv_targets, "op_names": [f"{prefix}conv1", f"{prefix}conv2", f"{prefix}conv3"],
             "quant_dtype": dtype, "quant_scheme": "affine", "granularity": "default",
             "fuse_names": [(f"{prefix}conv1", f"{prefix}bn1"), (f"{prefix}conv2", f"{prefix}bn2"),
                            (f"{prefix}conv3", f"{prefix}bn3")]}]


QUANTIZER_CASES = {
    "qat": (QATQuantizer, "in_channel", ["_input_", "weight", "_output_"], "int8"),
    "ptq": (PtqQuantizer, "in_channel", ["_input_", "weight", "_output_"], "int8"),
    "lsq": (LsqQuantizer, "in_channel", ["_input_", "weight", "_output_"], "int8"),
    "dorefa": (DoReFaQuantizer, "default", ["_input_", "weight"], "int8"),
    "bnn": (BNNQuantizer, "default", ["_input_", "weight", "_output_"], None),  # NNI's BNN config: no dtype
}


# LSQ and DoReFa use the Lightning loop as QAT does: Lightning runs QAT, PTQ (observe only) and BNN.
QUANTIZER_RUNS = runs(*((m, c) for m in ("lightning", "pytorch") for c in sorted(QUANTIZER_CASES)
                        if m == "pytorch" or c in ("qat", "ptq", "bnn")))


@pytest.mark.parametrize("model_type, case", QUANTIZER_RUNS)
def test_quantizer_forward(model_type: str, case: str):
    quantizer_cls, fc_granularity, conv_targets, dtype = QUANTIZER_CASES[case]
    model, _, _ = create_model(model_type)
    prefix = "model." if model_type == "lightning" else ""
    evaluator = create_evaluator(model_type, model)
    quantizer = quantizer_cls(model, _quant_config(prefix, fc_granularity, conv_targets, dtype), evaluator)
    _, calibration = quantizer.compress(3, 1)
    assert {f"{prefix}fc1", f"{prefix}fc2", f"{prefix}conv1", f"{prefix}conv2", f"{prefix}conv3"} <= set(calibration)
    assert sorted(calibration[f"{prefix}conv2"]) == sorted(conv_targets)
    entry = calibration[f"{prefix}fc1"]["weight"]
    if fc_granularity == "in_channel":
        assert entry["scale"].shape == (1, 32 * 24 * 24)
    assert entry["quant_bits"] == (1 if case == "bnn" else 8)


# --- distillation/test_distiller.py --------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("distil_type", ["adaptive1d", "dynamic"])
def test_adaptive_distiller(model_type: str, distil_type: str):
    model, config_list_dict, dummy_input = create_model(model_type)
    teacher_model, _, _ = create_model(model_type)
    evaluator = create_evaluator(model_type, model)

    def teacher_predict(batch, model):
        return model(batch[0] if isinstance(batch, (tuple, list)) else batch)

    config_list = config_list_dict["distillation"]
    if distil_type == "adaptive1d":
        distiller = Adaptive1dLayerwiseDistiller(model, config_list, evaluator, teacher_model, teacher_predict)
        distiller.track_forward(dummy_input)
    else:
        distiller = DynamicLayerwiseDistiller(model, config_list, evaluator, teacher_model, teacher_predict)
    _, losses = distiller.compress(3, None)
    prefix = "model." if model_type == "lightning" else ""
    assert set(losses) == {f"{prefix}{n}" for n in ("conv1", "conv2", "conv3", "fc1", "fc2")}
    assert len(distiller.loss_history) == 3


# --- test_fusion_compress.py ---------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_fusion_compress(model_type: str):
    model, config_list_dict, _ = create_model(model_type)
    teacher_model, _, _ = create_model(model_type)
    evaluator = create_evaluator(model_type, model)

    def teacher_predict(batch, model):
        return model(batch[0] if isinstance(batch, (tuple, list)) else batch)

    distiller = DynamicLayerwiseDistiller(model, config_list_dict["distillation"], evaluator, teacher_model,
                                          teacher_predict)
    pruner = TaylorPruner.from_compressor(distiller, config_list_dict["pruning"], 2)
    quantizer = LsqQuantizer.from_compressor(pruner, config_list_dict["quantization"])
    _, calibration = quantizer.compress(4, None)
    prefix = "model." if model_type == "lightning" else ""
    assert ratio(pruner.get_masks()[f"{prefix}conv1"]["weight"]) == 0.75
    assert f"{prefix}fc1" in calibration and len(distiller.loss_history) == 4
    assert evaluator.step_count == 4


# --- utils/test_evaluator.py ---------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_evaluator(model_type: str):
    model, _, _ = create_model(model_type)
    evaluator = create_evaluator(model_type, model)
    evaluator.bind_model(model)
    flags: dict[str, int] = {}
    seen = lambda key: flags.__setitem__(key, flags.get(key, 0) + 1)  # noqa: E731
    evaluator.patch_loss(lambda loss, batch: seen("loss") or loss)
    evaluator.patch_optimizer_step([lambda: seen("before")], [lambda: seen("after")])
    conv1 = model.model.conv1 if model_type == "lightning" else model.conv1
    handles = [conv1.weight.register_hook(lambda grad: seen("tensor")),
               conv1.register_forward_hook(lambda *args: seen("forward")),
               conv1.register_full_backward_hook(lambda *args: seen("backward"))]
    evaluator.train(max_steps=1)
    for h in handles:
        h.remove()
    assert flags == {"loss": 1, "before": 1, "after": 1, "tensor": 1, "forward": 1, "backward": 1}
    metric = evaluator.evaluate()
    value = metric[0] if model_type == "lightning" else metric
    assert 0.0 <= value <= 1.0
    assert evaluator.get_dummy_input().shape == (4, 1, 28, 28)
