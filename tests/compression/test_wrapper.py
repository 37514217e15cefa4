"""The shared wrapper: masks on inputs, outputs, parameters and buffers; exact unwrap."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hubcompress.compression.pruning import L1NormPruner, LevelPruner
from hubcompress.errors import CompressionError


class Scores(nn.Module):
    def __init__(self):
        super().__init__()
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        return self.softmax(x)


def test_add_on_a_softmax_input_equals_softmax_over_kept_positions():
    model = Scores()
    keep = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    pruner = LevelPruner(model, [{"op_names": ["softmax"], "target_names": ["_input_"], "sparse_ratio": 0.5,
                                  "apply_method": "add"}])
    pruner.update_masks({"softmax": {"_input_": keep}})
    x = torch.randn(3, 6) * 4
    out = model(x)
    expected = torch.zeros_like(x)
    expected[:, keep.bool()] = torch.softmax(x[:, keep.bool()], dim=-1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[:, ~keep.bool()], torch.zeros(3, 2))
    # a row masked entirely stays finite
    pruner.update_masks({"softmax": {"_input_": torch.zeros(6)}})
    assert torch.isfinite(model(x)).all()


class TwoInOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x, gate=None):
        y = self.linear(x) * (gate if gate is not None else 1.0)
        return y, {"logits": y + 1}


class Host(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = TwoInOut()

    def forward(self, x, gate):
        return self.block(x, gate=gate)


def test_inputs_by_position_and_name_outputs_by_index_and_key():
    torch.manual_seed(0)
    model = Host()
    from hubcompress.compression.config import PruningSetting

    PruningSetting.register("TwoInOut", {})
    pruner = LevelPruner(model, [{"op_names": ["block"], "sparse_ratio": 0.5,
                                  "target_names": ["_input_0", "_input_gate", "_output_0"]}])
    m_in, m_gate, m_out = torch.tensor([1.0, 0, 1, 0]), torch.tensor([0.0, 1, 1, 1]), torch.tensor([1.0, 1, 0, 1])
    pruner.update_masks({"block": {"_input_0": m_in, "_input_gate": m_gate, "_output_0": m_out}})
    x, gate = torch.randn(2, 4), torch.rand(2, 4) + 0.5
    y, extra = model(x, gate)
    expected = model.block.linear(x * m_in) * (gate * m_gate) * m_out
    assert torch.allclose(y, expected)
    # _output_1 is a dict, not a tensor: a clear error, never a silent no-op
    pruner.unwrap_model()
    LevelPruner(model, [{"op_names": ["block"], "sparse_ratio": 0.5, "target_names": ["_output_1"]}])
    with pytest.raises(CompressionError, match="is a dict, not a tensor"):
        model(x, gate)


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return {"hidden": x, "logits": self.linear(x)}


def test_output_key_target_inside_a_dict_and_a_missing_key():
    from hubcompress.compression.config import PruningSetting

    PruningSetting.register("DictOut", {})
    model = nn.Sequential(DictOut())
    pruner = LevelPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5, "target_names": ["_output_logits"]}])
    mask = torch.tensor([0.0, 0, 1, 1])
    pruner.update_masks({"0": {"_output_logits": mask}})
    x = torch.randn(2, 4)
    out = model(x)
    assert torch.allclose(out["logits"], model[0].linear(x) * mask)
    pruner.unwrap_model()
    pruner = LevelPruner(model, [{"op_names": ["0"], "sparse_ratio": 0.5, "target_names": ["_output_scores"]}])
    pruner.update_masks({"0": {"_output_scores": mask}})
    with pytest.raises(CompressionError, match="not in its output"):
        model(x)


def test_unwrap_restores_tree_and_state_dict_exactly(conv_net):
    before_keys = list(conv_net.state_dict())
    before = {k: v.clone() for k, v in conv_net.state_dict().items()}
    before_modules = [(n, type(m)) for n, m in conv_net.named_modules()]
    pruner = L1NormPruner(conv_net, [{"op_types": ["Conv2d", "Linear", "BatchNorm2d"], "sparse_ratio": 0.5}])
    pruner.compress()
    assert any("_hc_wrapper" in n for n, _ in conv_net.named_modules())
    pruner.unwrap_model()
    assert list(conv_net.state_dict()) == before_keys
    assert all(torch.equal(before[k], v) for k, v in conv_net.state_dict().items())
    assert [(n, type(m)) for n, m in conv_net.named_modules()] == before_modules
    assert "forward" not in conv_net.conv1.__dict__


def test_unwrap_with_apply_masks_keeps_the_masked_function(conv_net):
    x = torch.randn(2, 3, 8, 8)
    pruner = L1NormPruner(conv_net, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    pruner.compress()
    masked = conv_net(x)
    pruner.unwrap_model(apply_masks=True)
    assert torch.allclose(conv_net(x), masked, atol=1e-6)


def test_masked_parameter_gets_no_gradient_where_masked_and_keeps_its_name():
    model = nn.Sequential(nn.Linear(4, 4))
    pruner = L1NormPruner(model, [{"op_types": ["Linear"], "sparse_ratio": 0.5}])
    _, masks = pruner.compress()
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    model(torch.randn(3, 4)).sum().backward()
    assert torch.equal(model[0].weight.grad * (1 - masks["0"]["weight"]), torch.zeros(4, 4))


def test_wrapped_model_moves_dtype_and_deepcopies(conv_net):
    pruner = L1NormPruner(conv_net, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    pruner.compress()
    clone = copy.deepcopy(conv_net)
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(clone(x), conv_net(x))
    conv_net.double()
    assert conv_net.conv1._hc_wrapper.weight_mask.dtype == torch.float64
    assert conv_net(x.double()).dtype == torch.float64
