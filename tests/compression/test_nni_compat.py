"""Issue 13: NNI 3.0 scripts run after an import change. One test (or a few) per item."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import logging

import pytest
import torch
from torch import nn

from hubcompress.compression import (
    AGPPruner,
    BNNQuantizer,
    DoReFaQuantizer,
    DynamicLayerwiseDistiller,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LevelPruner,
    LinearPruner,
    LsqPlusQuantizer,
    LsqQuantizer,
    MovementPruner,
    PtqQuantizer,
    QATQuantizer,
    Quantizer,
    SlimPruner,
    TaylorPruner,
    TorchEvaluator,
)
from hubcompress.compression.distillation import Adaptive1dLayerwiseDistiller
from hubcompress.errors import CompressionError

from .helpers import conv_evaluator, zero_fraction
from .nni_assets import SimpleTorchModel



def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_LIGHTNING = _installed("lightning")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def mlp_evaluator(model: nn.Module) -> TorchEvaluator:
    def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        g = torch.Generator().manual_seed(0)
        for _ in range(max_steps or 4):
            loss = training_step((torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)), model)
            optimizers.zero_grad()
            loss.backward()
            optimizers.step()
    return TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=0.1),
                          lambda batch, model: nn.functional.cross_entropy(model(batch[0]), batch[1]))


# --- 1. from_compressor takes NNI's positional parameters -----------------------------------------
# NNI 3.0's from_compressor parameters after (compressor, new_config_list), in order.
NNI_FROM_COMPRESSOR = {
    LevelPruner: ["evaluator"], L1NormPruner: ["evaluator"], L2NormPruner: ["evaluator"], FPGMPruner: ["evaluator"],
    TaylorPruner: ["training_steps", "evaluator"],
    SlimPruner: ["training_steps", "regular_scale", "evaluator"],
    MovementPruner: ["warmup_step", "cooldown_begin_step", "regular_scale", "evaluator"],
    QATQuantizer: ["quant_start_step", "evaluator"],
    PtqQuantizer: ["evaluator"], LsqQuantizer: ["evaluator"], LsqPlusQuantizer: ["evaluator"],
    DoReFaQuantizer: ["evaluator"], BNNQuantizer: ["evaluator"], Quantizer: ["evaluator"],
    DynamicLayerwiseDistiller: ["teacher_model", "teacher_predict", "origin_loss_lambda", "evaluator"],
    Adaptive1dLayerwiseDistiller: ["teacher_model", "teacher_predict", "origin_loss_lambda", "evaluator"],
}


@pytest.mark.parametrize("cls", list(NNI_FROM_COMPRESSOR), ids=lambda c: c.__name__)
def test_from_compressor_has_nnis_positional_parameters(cls):
    params = [p for p in inspect.signature(cls.from_compressor).parameters.values()
              if p.kind is p.POSITIONAL_OR_KEYWORD][2:]
    assert [p.name for p in params] == NNI_FROM_COMPRESSOR[cls]


def test_from_compressor_nni_call_forms():
    model = mlp()
    ev = mlp_evaluator(model)
    first = L1NormPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    taylor = TaylorPruner.from_compressor(first, [{"op_names": ["2"], "sparse_ratio": 0.5}], 3, evaluator=ev)
    assert taylor.training_steps == 3 and taylor.evaluator is ev
    qat = QATQuantizer.from_compressor(taylor, [{"op_types": ["Linear"], "quant_dtype": "int8"}], 2, evaluator=ev)
    assert qat.quant_start_step == 2
    teacher = mlp()
    distiller = DynamicLayerwiseDistiller.from_compressor(qat, [{"op_names": ["2"]}], teacher,
                                                          lambda batch, t: t(batch[0]), 0.1)
    assert distiller.teacher_model is teacher and distiller.origin_loss_lambda == 0.1 and distiller.evaluator is ev
    _, losses = distiller.compress(max_steps=4)
    assert set(losses) == {"2"} and zero_fraction(taylor.get_masks()["2"]["weight"]) == 0.5
    assert zero_fraction(first.get_masks()["0"]["weight"]) == 0.5


def test_from_compressor_positional_evaluator_and_slim_movement():
    model = mlp()
    ev = mlp_evaluator(model)
    level = LevelPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.25}])
    l2 = L2NormPruner.from_compressor(level, [{"op_names": ["2"], "sparse_ratio": 0.5}], ev)  # evaluator 3rd
    assert l2.evaluator is ev
    slim = SlimPruner.from_compressor(L1NormPruner(mlp(), [{"op_names": ["0"], "sparse_ratio": 0.5}]),
                                      [{"op_names": ["2"], "sparse_ratio": 0.5}], 2, 0.01, evaluator=ev)
    assert (slim.training_steps, slim.regular_scale) == (2, 0.01)
    movement = MovementPruner.from_compressor(L1NormPruner(mlp(), [{"op_names": ["0"], "sparse_ratio": 0.5}]),
                                              [{"op_names": ["2"], "sparse_ratio": 0.5}], 1, 3, evaluator=ev)
    assert (movement.warmup_step, movement.cooldown_begin_step) == (1, 3)


# --- 2. TorchEvaluator lets a loop that honours max_steps finish ----------------------------------
def test_training_function_that_honours_max_steps_runs_to_its_end():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    log = {"zero_grad_after_step": 0, "returned": False, "forwards": 0}

    def training_step(batch, model):
        log["forwards"] += 1
        return model(batch).sum()

    def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        for _ in range(max_steps):
            loss = training_step(torch.randn(4, 4), model)
            loss.backward()
            optimizers.step()
            optimizers.zero_grad()
            log["zero_grad_after_step"] += 1
            lr_schedulers.step()
        log["returned"] = True

    evaluator = TorchEvaluator(training_func, optimizer, training_step, scheduler)
    taylor = TaylorPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5}], evaluator, training_steps=5)
    taylor.compress(max_steps=5)
    assert log == {"zero_grad_after_step": 5, "returned": True, "forwards": 5}
    assert scheduler.last_epoch == 5 and evaluator.step_count == 5


def test_runaway_loop_is_still_stopped_before_another_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    forwards = []
    evaluator = conv_evaluator(model)
    original = evaluator.training_step
    evaluator.training_step = lambda batch, model: forwards.append(1) or original(batch, model)
    QATQuantizer(model, [{"op_types": ["Linear"], "quant_dtype": "int8"}], evaluator).compress(max_steps=3)
    assert evaluator.step_count == 3 and len(forwards) == 3  # the 4th batch never ran


# --- 3. Quantizer without an evaluator; update_calibration_config ---------------------------------
def test_quantizer_from_a_pruner_without_evaluator_simulates_a_calibration():
    model = mlp()
    trained = copy.deepcopy(model)
    config = [{"op_types": ["Linear"], "target_names": ["_input_", "weight", "_output_"], "quant_dtype": "int8"}]
    qat = QATQuantizer(trained, config, mlp_evaluator(trained), ema_decay=0.5)
    _, calibration = qat.compress(max_steps=3)
    x = torch.randn(5, 4)
    expected = trained(x)

    model.load_state_dict({k: v for k, v in trained.state_dict().items()})
    pruner = L1NormPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.0}])
    sim = Quantizer.from_compressor(pruner, config)  # no evaluator anywhere: NNI's simulation quantizer
    sim.update_calibration_config(calibration)
    assert torch.allclose(model(x), expected, atol=1e-6)
    got = sim.get_calibration_config()
    assert torch.equal(got["0"]["weight"]["scale"], calibration["0"]["weight"]["scale"])
    with pytest.raises(CompressionError, match="quant_dtype 'int4'"):
        sim.update_calibration_config({"0": {"weight": {**calibration["0"]["weight"], "quant_dtype": "int4"}}})
    with pytest.raises(CompressionError, match="not a target"):
        sim.update_calibration_config({"0": {"bias": calibration["0"]["weight"]}})


def test_training_quantizers_still_need_an_evaluator():
    with pytest.raises(CompressionError, match="pass an evaluator"):
        QATQuantizer.from_compressor(L1NormPruner(mlp(), [{"op_names": ["0"], "sparse_ratio": 0.5}]),
                                     [{"op_types": ["Linear"], "quant_dtype": "int8"}])


# --- 4. BNN takes NNI's config without quant_dtype -----------------------------------------------
def test_bnn_quantizer_takes_nnis_documented_config():
    model = mlp()
    config = [{"op_names": ["0", "2"], "target_names": ["_input_", "weight", "_output_"], "quant_dtype": None,
               "quant_scheme": "affine", "granularity": "default"}]
    quantizer = BNNQuantizer(model, config, mlp_evaluator(model))
    _, calibration = quantizer.compress(max_steps=3)
    assert sorted(calibration["0"]) == ["_input_", "_output_", "weight"]
    assert {e["quant_bits"] for m in calibration.values() for e in m.values()} == {1}
    assert model[0].weight.abs().max() <= 1.0  # real weights are kept in [-1, 1]
    assert sorted(model[0]._hc_wrapper.apply_target("weight", model[0].weight).unique().tolist()) == [-1.0, 1.0]
    assert set(model(torch.randn(3, 4)).unique().tolist()) <= {-1.0, 1.0}  # binary outputs


def test_bnn_example_config_with_separate_weight_and_output_configs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.Hardtanh(), nn.Linear(8, 2))
    config = [{"op_names": ["0"], "target_names": ["weight"], "quant_dtype": None, "quant_scheme": "affine"},
              {"op_names": ["2"], "target_names": ["_output_"], "quant_dtype": None, "quant_scheme": "affine"}]
    _, calibration = BNNQuantizer(model, config, mlp_evaluator(model)).compress(max_steps=2)
    assert sorted((m, t) for m in calibration for t in calibration[m]) == [("0", "weight"), ("2", "_output_")]


# --- 9. internal_metric_block in a dependency group ----------------------------------------------
def test_internal_metric_block_in_a_dependency_group_prunes_each_block_equally():
    model = SimpleTorchModel()
    config = [{"op_names": ["conv2"], "dependency_group_id": "add", "internal_metric_block": 4, "sparse_ratio": 0.75},
              {"op_names": ["conv3"], "dependency_group_id": "add", "sparse_ratio": 0.75}]
    _, masks = L1NormPruner(model, config).compress()
    kept = masks["conv2"]["weight"].sum([1, 2, 3]).bool()
    assert torch.equal(kept, masks["conv3"]["weight"].sum([1, 2, 3]).bool())
    assert kept.reshape(4, 8).sum(1).tolist() == [2, 2, 2, 2]


def test_internal_metric_blocks_of_a_group_combine_by_lcm():
    model = SimpleTorchModel()
    config = [{"op_names": ["conv2"], "dependency_group_id": "add", "internal_metric_block": 4, "sparse_ratio": 0.5},
              {"op_names": ["conv3"], "dependency_group_id": "add", "internal_metric_block": 2, "sparse_ratio": 0.5}]
    _, masks = L1NormPruner(model, config).compress()
    kept = masks["conv3"]["weight"].sum([1, 2, 3]).bool()
    assert kept.reshape(4, 8).sum(1).tolist() == [4, 4, 4, 4]


def test_fused_projection_blocks_still_fold_onto_the_group():
    # GPT-2's c_attn case: a member whose metric is internal_metric_block times longer.
    from ..conftest import tiny_gpt2
    from hubcompress.compression import transformer_config_list

    model = tiny_gpt2()
    _, masks = L1NormPruner(model, transformer_config_list(model, heads=0.5)).compress()
    assert zero_fraction(masks["transformer.h.0.attn.c_attn"]["weight"]) == 0.5


# --- 10. Linear / AGP schedule SlimPruner ---------------------------------------------------------
@pytest.mark.parametrize("scheduler_cls", [AGPPruner, LinearPruner])
def test_scheduled_slim_pruner(conv_net, scheduler_cls):
    conv_net.train()
    x = torch.randn(2, 3, 8, 8)
    evaluator = conv_evaluator(conv_net)
    slim = SlimPruner(conv_net, [{"op_types": ["BatchNorm2d"], "sparse_ratio": 0.5}], evaluator, training_steps=2,
                      regular_scale=0.01)
    ratios = []
    scheduled = scheduler_cls(slim, interval_steps=2, total_times=3)
    slim_update = slim.generate_masks
    slim.generate_masks = lambda: ratios.append(zero_fraction(slim_update()["bn3"]["weight"]))
    _, masks = scheduled.compress(max_steps=6)
    assert ratios == sorted(ratios) and ratios[-1] == 0.5 and len(ratios) == 3
    assert zero_fraction(masks["bn3"]["weight"]) == 0.5
    slim.unwrap_model()
    assert not any("slim_factor" in n for n, _ in conv_net.named_parameters())  # factors folded away
    conv_net.eval()
    assert conv_net(x).shape == (2, 10)


def test_movement_pruner_is_still_refused_by_a_scheduler(conv_net):
    movement = MovementPruner(conv_net, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], conv_evaluator(conv_net),
                              warmup_step=1, cooldown_begin_step=3)
    with pytest.raises(CompressionError, match="has its own schedule"):
        AGPPruner(movement, interval_steps=1, total_times=2)


# --- 11. nni.compression.utils ---------------------------------------------------------------------
def test_utils_import_paths():
    from hubcompress.compression.utils import (  # noqa: F401 - NNI's import lines
        TorchEvaluator as UtilsTorchEvaluator,
        auto_set_denpendency_group_ids,
        auto_set_dependency_group_ids,
        compute_sparsity,
        compute_sparsity_compact2origin,
        compute_sparsity_mask2compact,
        count_flops_params,
        trace,
    )
    from hubcompress.compression.utils.counter import count_flops_params as from_counter

    assert UtilsTorchEvaluator is TorchEvaluator and from_counter is count_flops_params
    assert auto_set_denpendency_group_ids is auto_set_dependency_group_ids


def test_auto_set_dependency_group_ids_on_nnis_test_net():
    from hubcompress.compression.utils import auto_set_denpendency_group_ids

    model = SimpleTorchModel().train()
    before = copy.deepcopy(model.state_dict())
    config = [{"op_types": ["Linear"], "exclude_op_names": ["fc2"], "sparse_ratio": 0.75},
              {"op_names": ["conv1", "conv2", "conv3"], "sparse_ratio": 0.75, "granularity": "out_channel"}]
    out = auto_set_denpendency_group_ids(model, config, torch.rand(2, 1, 28, 28))
    by_name = {c["op_names"][0]: c for c in out}
    assert list(by_name) == ["fc1", "conv1", "conv2", "conv3"]
    assert by_name["conv2"]["dependency_group_id"] == by_name["conv3"]["dependency_group_id"]
    assert "dependency_group_id" not in by_name["conv1"] and "dependency_group_id" not in by_name["fc1"]
    # conv2 has 4 groups; conv1 feeds it.
    assert by_name["conv1"]["internal_metric_block"] == 4 and by_name["conv2"]["internal_metric_block"] == 4
    assert by_name["conv2"]["granularity"] == "out_channel" and by_name["fc1"]["sparse_ratio"] == 0.75
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    again = auto_set_denpendency_group_ids(model, config, torch.rand(2, 1, 28, 28))
    assert again == out  # stable ids


def test_find_dependencies_on_a_transformer_residual_stream():
    from hubcompress.compression.utils import find_dependencies

    from ..conftest import tiny_bert

    model = tiny_bert()
    sets, _ = find_dependencies(model, {"input_ids": torch.randint(0, 100, (1, 8))})
    hidden = next(s for s in sets if "bert.embeddings.word_embeddings" in s)
    assert {"bert.encoder.layer.0.attention.output.dense", "bert.encoder.layer.1.output.dense"} <= hidden
    assert not any("query" in n or "intermediate" in n for s in sets for n in s)


def test_count_flops_params(caplog):
    from hubcompress.compression.utils import count_flops_params

    model = SimpleTorchModel()
    with caplog.at_level(logging.INFO, logger="hubcompress.compression.utils.counter"):
        flops, params, results = count_flops_params(model, (1, 1, 28, 28))
    # NNI's numbers: multiply-accumulates per sample of conv and linear layers, their parameters.
    expected = {"conv1": 16 * 26 * 26 * 9, "conv2": 32 * 24 * 24 * 9 * 16 // 4, "conv3": 32 * 24 * 24 * 9 * 16,
                "fc1": 18432 * 100, "fc2": 100 * 10}
    assert {r["name"]: r["flops"] for r in results} == expected and flops == sum(expected.values())
    assert params == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("bn"))
    assert results[0]["weight_shape"] == (16, 1, 3, 3) and results[0]["output_size"] == (1, 16, 26, 26)
    assert "FLOPs total: %d" % flops in caplog.text
    assert count_flops_params(model, torch.randn(4, 1, 28, 28), verbose=False)[0] == flops  # per sample
    full = count_flops_params(model, (1, 1, 28, 28), verbose=False, mode="full")[2]
    assert "bn1" in {r["name"] for r in full}
    # A pruner's mask counts: half of conv3's filters masked, half of its FLOPs.
    L1NormPruner(model, [{"op_names": ["conv3"], "sparse_ratio": 0.5}]).compress()
    masked = count_flops_params(model, (1, 1, 28, 28), verbose=False)[2]
    assert next(r["flops"] for r in masked if r["name"] == "conv3") == expected["conv3"] // 2


def test_compute_sparsity():
    from hubcompress.compression.utils import compute_sparsity

    origin = SimpleTorchModel()
    _, masks = L1NormPruner(copy.deepcopy(origin), [{"op_names": ["conv1"], "sparse_ratio": 0.5}]).compress()
    compact = copy.deepcopy(origin)
    compact.fc2 = nn.Linear(100, 5)  # as if speedup had halved fc2
    config = [{"op_names": ["conv1"], "sparse_ratio": 0.5}, {"op_types": ["Linear"], "sparse_ratio": 0.1}]
    current, c2o, m2c = compute_sparsity(origin, compact, masks, config)
    assert [r["total_sparsity"] for r in m2c] == [0.5, 0.0]
    assert c2o[0]["total_sparsity"] == 0.0 and c2o[1]["total_sparsity"] == pytest.approx(500 / (18432 * 100 + 1000))
    assert current[0]["total_sparsity"] == 0.5 and current[1]["sparse_ratio"] == 0.1


# --- 12. LightningEvaluator ------------------------------------------------------------------------
def test_lightning_evaluator_is_lazy():
    import subprocess
    import sys

    code = ("import sys, hubcompress.compression as c, hubcompress.compression.utils as u; "
            "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules; print('ok')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


@pytest.mark.skipif(not HAS_LIGHTNING, reason="lightning is not installed (pip install 'hubcompress[lightning]')")
def test_lightning_evaluator_drives_taylor_and_ptq_on_one_trainer():
    from hubcompress.compression import LightningEvaluator, PtqQuantizer
    from hubcompress.compression.utils import LightningEvaluator as FromUtils

    from .nni_assets import create_lightning_evaluator, lightning_classes

    assert FromUtils is LightningEvaluator
    model_cls, _ = lightning_classes()
    torch.manual_seed(0)
    model = model_cls()
    evaluator = create_lightning_evaluator()
    taylor = TaylorPruner(model, [{"op_names": ["model.conv3"], "sparse_ratio": 0.5}], evaluator, training_steps=3)
    _, masks = taylor.compress()
    assert evaluator.step_count == 3 and zero_fraction(masks["model.conv3"]["weight"]) == 0.5
    taylor.unwrap_model()
    assert model._trainer is None  # the model does not keep (and pickle) the Trainer
    steps_before = evaluator.trainer.global_step

    weights = copy.deepcopy(model.state_dict())
    ptq = PtqQuantizer(model, [{"op_names": ["model.fc2"], "quant_dtype": "int8"}], evaluator)
    _, calibration = ptq.compress(max_steps=2)  # the same Trainer, 2 more steps, observing only
    assert evaluator.trainer.global_step == steps_before + 2 and sorted(calibration["model.fc2"]) == [
        "_input_", "_output_", "bias", "weight"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    ptq.unwrap_model()

    with pytest.raises(CompressionError, match="LightningModule"):
        TaylorPruner(SimpleTorchModel(), [{"op_names": ["conv1"], "sparse_ratio": 0.5}], evaluator, training_steps=1)
