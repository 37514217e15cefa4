"""Fusion in both senses: modules fused for quantization (fuse_names, BN folding), and pruning +
quantization + distillation fused in one training run on a tiny BERT."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hubcompress.compression import (
    AGPPruner,
    DynamicLayerwiseDistiller,
    QATQuantizer,
    TaylorPruner,
    TorchEvaluator,
    transformer_config_list,
)
from hubcompress.compression.pruning import model_layout
from hubcompress.compression.quantization import QUANT_METHODS
from hubcompress.errors import CompressionError, ConfigListError

from ..conftest import tiny_bert
from .helpers import conv_evaluator, zero_fraction


def randomise_batchnorms(net: nn.Module) -> None:
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)


FUSED = [["conv1", "bn1", "relu"], ["conv2", "bn2"], ["conv3", "bn3"]]


def test_fused_conv_bn_equals_unfused(conv_net):
    randomise_batchnorms(conv_net)
    conv_net.conv2.bias = None  # a leader without a bias gets the folded one added
    x = torch.randn(4, 3, 8, 8)
    expected = conv_net(x)
    config = [{"op_types": ["Conv2d"], "target_names": ["weight", "_output_"], "quant_dtype": "int8",
               "apply_method": "bypass", "fuse_names": FUSED}]
    quantizer = QATQuantizer(conv_net, config, conv_evaluator(conv_net))
    assert torch.allclose(conv_net(x), expected, atol=1e-5)
    # Folded, the conv's weight is scaled per channel by gamma / sqrt(var + eps).
    space = quantizer._target_spaces["conv1"]["weight"]
    bn = conv_net.bn1
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    assert torch.allclose(quantizer.effective_weight(space), conv_net.conv1.weight * factor[:, None, None, None])
    quantizer.unwrap_model(bake=True)  # folded into the plain model, BN replaced by Identity
    assert isinstance(conv_net.bn1, nn.Identity) and conv_net.conv2.bias is not None
    assert torch.allclose(conv_net(x), expected, atol=1e-5)


def test_fused_quantization_quantizes_the_folded_weight(conv_net):
    randomise_batchnorms(conv_net)
    config = [{"op_types": ["Conv2d"], "target_names": ["weight", "_output_"], "quant_dtype": "int8",
               "fuse_names": FUSED}]
    conv_net.train()
    _, calibration = QATQuantizer(conv_net, config, conv_evaluator(conv_net, lr=0.0)).compress(max_steps=3)
    bn = conv_net.bn3
    folded = conv_net.conv3.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps))[:, None, None, None]
    assert float(calibration["conv3"]["weight"]["tracked_max"]) == pytest.approx(float(folded.detach().max()), rel=1e-5)
    assert float(calibration["conv1"]["_output_"]["tracked_min"]) >= 0.0  # conv1's output is after the fused ReLU
    assert "bn1" not in calibration


@pytest.mark.parametrize("fuse,extra,match", [
    ([["conv1", "bn9"]], [], "no module named 'bn9'.*bn1"),
    ([["conv1", "fc"]], [], "no supported fusion"),
    ([["conv3", "bn2"]], [], "16 output channels"),
    ([["conv1", "bn1"]], [{"op_names": ["bn1"], "quant_dtype": "int8"}],
     r"own quantization config \(config_list\[1\]\)"),
    ([["fc", "relu"]], [], "leader 'fc' is not quantized"),
    ([["conv1", "bn1"], ["conv1", "bn1"]], [], "already fused"),
])
def test_fusion_errors(conv_net, fuse, extra, match):
    config = [{"op_types": ["Conv2d"], "quant_dtype": "int8", "fuse_names": fuse}] + extra
    with pytest.raises(ConfigListError, match=match) as info:
        QATQuantizer(conv_net, config, conv_evaluator(conv_net))
    assert info.value.index == 0 and info.value.key == "fuse_names"
    assert not any("_hc_wrapper" in n for n, _ in conv_net.named_modules())  # left as it was


def test_a_fused_batchnorm_fed_something_else_raises():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x) + x)  # conv and bn do not run back to back

    model = Skip().eval()
    QATQuantizer(model, [{"op_names": ["conv"], "quant_dtype": "int8", "fuse_names": [["conv", "bn"]]}],
                 conv_evaluator(model))
    with pytest.raises(CompressionError, match="back to back"):
        model(torch.randn(1, 3, 4, 4))


# --- pruning + quantization + distillation in one run -------------------------------------------

def bert_batches(n: int = 8):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 100, (8, 12), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[:, 0] > 50).long()})
    return out


def bert_loop(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
    while True:
        for batch in bert_batches():
            optimizers.zero_grad()
            training_step(batch, model).backward()
            optimizers.step()


def test_prune_quantize_distill_in_one_run_then_speedup():
    model = tiny_bert().train()
    original = copy.deepcopy(model.state_dict())
    evaluator = TorchEvaluator(bert_loop, torch.optim.AdamW(model.parameters(), lr=1e-3),
                               lambda batch, model: model(**batch).loss)
    taylor = TaylorPruner(model, transformer_config_list(model, heads=0.5, ffn=0.5), evaluator, training_steps=2)
    pruner = AGPPruner(taylor, interval_steps=2, total_times=2)
    quantizer = QATQuantizer.from_compressor(pruner, [{"op_types": ["Linear"], "exclude_op_names": ["classifier"],
                                                       "target_names": ["_input_", "weight"], "quant_dtype": "int8",
                                                       "target_settings": {"weight": {"granularity": "per_channel"}}}],
                                             quant_start_step=1)
    distiller = DynamicLayerwiseDistiller.from_compressor(
        quantizer, [{"op_names_re": [r"bert\.encoder\.layer\.\d+$"]},
                    {"op_names": ["classifier"], "apply_method": "kl", "temperature": 2.0}], origin_loss_lambda=0.5)
    _, losses = distiller.compress(max_steps=6)

    assert evaluator.step_count == 6 and len(distiller.loss_history) == 6
    assert sorted(losses) == ["bert.encoder.layer.0", "bert.encoder.layer.1", "classifier"]
    masks, calibration = taylor.get_masks(), quantizer.get_calibration_config()
    layout = model_layout(model)
    for block in layout.blocks:
        assert zero_fraction(masks[block.ffn_in]["weight"]) == 0.5
        heads = masks[block.q]["weight"].reshape(layout.num_heads, -1)[:, 0]
        assert heads.sum() == layout.num_heads // 2
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "classifier"]
    assert sorted(calibration) == sorted(linears)
    assert tuple(calibration[layout.blocks[0].ffn_in]["weight"]["scale"].shape) == (64, 1)
    # Per target, in order: fake-quantize, then mask.
    wrapper = model.get_submodule(layout.blocks[0].ffn_in)._hc_wrapper
    space = wrapper.target_spaces["quantization"]["weight"]
    weight = wrapper.module.weight
    expected = QUANT_METHODS[space.method](weight, space) * masks[layout.blocks[0].ffn_in]["weight"]
    assert torch.equal(wrapper.apply_target("weight", weight), expected)
    # The teacher is the untouched original.
    teacher = distiller.teacher_model
    assert not any("_hc_wrapper" in n for n, _ in teacher.named_modules())
    assert all(torch.equal(original[k], v) for k, v in teacher.state_dict().items())

    inputs = bert_batches(1)[0]
    dummy = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    model.eval()
    quantizer.unwrap_model(bake=True)  # masks multiplied in, wrappers gone
    assert not any("_hc_wrapper" in n for n, _ in model.named_modules())
    try:
        from hubcompress.speedup import ModelSpeedup
    except ImportError as exc:
        pytest.skip(f"hubcompress.speedup is not importable yet ({exc}); the fused run itself passed")
    before = model(**dummy).logits
    small = ModelSpeedup(model, dummy, masks).speedup_model()
    ffn = small.get_submodule(layout.blocks[0].ffn_in)
    assert ffn.out_features == 32
    assert torch.allclose(small(**dummy).logits, before, atol=1e-4)
