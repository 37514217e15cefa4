"""Speedup on plain modules: a conv net with BatchNorm and a residual add, a custom module with a
user replacer, a user GraphModule, the unsupported-module error, and the real MiniLM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hubcompress.compression.pruning import L1NormPruner, transformer_config_list
from hubcompress.errors import ReplacementError
from hubcompress.speedup import ModelSpeedup

from ..conftest import ResidualConvNet, minilm_path


def masks_of(model, config_list):
    pruner = L1NormPruner(model, config_list)
    _, masks = pruner.compress()
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    pruner.unwrap_model(apply_masks=True)
    return masks


def test_conv_net_with_batchnorm_and_a_residual_add():
    torch.manual_seed(0)
    net = ResidualConvNet().eval()
    masks = masks_of(net, [
        {"op_names": ["conv1", "conv2"], "sparse_ratio": 0.5, "dependency_group_id": "residual"},
        {"op_names": ["conv3"], "sparse_ratio": 0.25},
        {"op_names": ["bn1"], "target_names": ["weight", "bias"],
         "target_settings": {"weight": {"align": {"module_name": "conv1", "target_name": "weight", "dims": [0]}}}},
        {"op_names": ["bn2"], "target_names": ["weight", "bias"],
         "target_settings": {"weight": {"align": {"module_name": "conv2", "target_name": "weight", "dims": [0]}}}},
        {"op_names": ["bn3"], "target_names": ["weight", "bias"],
         "target_settings": {"weight": {"align": {"module_name": "conv3", "target_name": "weight", "dims": [0]}}}},
    ])
    x = torch.randn(5, 3, 12, 12)
    with torch.no_grad():
        expected = net(x)
    ModelSpeedup(net, torch.randn(2, 3, 8, 8), masks).speedup_model()
    assert (net.conv1.out_channels, net.conv2.in_channels, net.conv2.out_channels) == (4, 4, 4)
    assert (net.bn1.num_features, net.bn2.num_features, net.conv3.out_channels, net.bn3.num_features) == (4, 4, 12, 12)
    assert net.fc.in_features == 12
    with torch.no_grad():
        assert torch.allclose(net(x), expected, atol=1e-5)


def test_residual_conflict_keeps_the_union_and_reports_it():
    torch.manual_seed(0)
    net = ResidualConvNet().eval()
    # conv1 and conv2 are added together but masked differently: the union stays.
    keep1, keep2 = torch.tensor([1., 1, 1, 1, 0, 0, 0, 0]), torch.tensor([0., 0, 1, 1, 1, 1, 0, 0])
    masks = {"conv1": {"weight": keep1[:, None, None, None].expand(8, 3, 3, 3).contiguous(), "bias": keep1},
             "conv2": {"weight": keep2[:, None, None, None].expand(8, 8, 3, 3).contiguous(), "bias": keep2}}
    speedup = ModelSpeedup(net, torch.randn(2, 3, 8, 8), masks)
    speedup.speedup_model()
    assert net.conv1.out_channels == net.conv2.out_channels == 6
    assert "conv1" in speedup.report.shortfalls or "conv2" in speedup.report.shortfalls


class Gate(nn.Module):
    """A custom per-channel gate: out = x * g."""

    def __init__(self, width: int):
        super().__init__()
        self.g = nn.Parameter(torch.rand(width) + 0.5)

    def forward(self, x):
        return x * self.g


def _gate_replacer(module: Gate, keep):
    new = Gate(int(keep["g"][0].sum()))
    with torch.no_grad():
        new.g.copy_(module.g[keep["g"][0]])
    return new


def test_custom_module_with_a_user_replacer_and_the_unsupported_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), Gate(8), nn.Linear(8, 3)).eval()
    masks = masks_of(net, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    with pytest.raises(ReplacementError, match=r"'1' \(Gate\) must shrink but has no replacer.*customized_replacers"):
        ModelSpeedup(net, torch.randn(2, 6), masks).speedup_model()
    net = nn.Sequential(nn.Linear(6, 8), Gate(8), nn.Linear(8, 3)).eval()
    masks = masks_of(net, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    x = torch.randn(4, 6)
    expected = net(x)
    ModelSpeedup(net, torch.randn(2, 6), masks, customized_replacers={"Gate": _gate_replacer}).speedup_model()
    assert net[1].g.shape == (4,) and net[2].in_features == 4
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_a_user_graph_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    masks = masks_of(net, [{"op_names": ["0"], "sparse_ratio": 0.25}])
    x = torch.randn(4, 6)
    expected = net(x)
    graph_module = torch.export.export(net, (torch.randn(2, 6),)).module()
    ModelSpeedup(net, torch.randn(2, 6), masks, graph_module=graph_module).speedup_model()
    assert net[0].out_features == 6 and net[2].in_features == 6
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_bad_masks_are_reported():
    net = nn.Sequential(nn.Linear(6, 8))
    with pytest.raises(ReplacementError, match="does not have"):
        ModelSpeedup(net, torch.randn(1, 6), {"nope": {"weight": torch.ones(8, 6)}}).speedup_model()
    with pytest.raises(ReplacementError, match="has shape"):
        ModelSpeedup(net, torch.randn(1, 6), {"0": {"weight": torch.ones(6, 8)}}).speedup_model()


def test_real_minilm_half_heads_and_ffn(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    import hubcompress
    from ..conftest import SENTENCES

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    pruner = L1NormPruner(model, transformer_config_list(model, heads=0.5, ffn=0.5))
    _, masks = pruner.compress()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        masked = model(**batch).last_hidden_state
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    pruner.unwrap_model()
    before = sum(p.numel() for p in model.encoder.parameters())
    ModelSpeedup(model, dict(tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")), masks).speedup_model()
    after = sum(p.numel() for p in model.encoder.parameters())
    assert model.encoder.layer[3].attention.self.num_attention_heads == 6
    assert model.encoder.layer[3].intermediate.dense.out_features == 768
    assert after < 0.52 * before  # half the heads and FFN of every layer: the encoder's weights halve
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert float((out - masked).abs().max()) <= 1e-4 * max(1.0, float(masked.abs().max()))
    hubcompress.save_pretrained(model, tmp_path, base_model="sentence-transformers/all-MiniLM-L6-v2")
    with torch.no_grad():
        assert torch.equal(hubcompress.from_pretrained(tmp_path)(**batch).last_hidden_state, out)


class ConvZoo(nn.Module):
    """Conv1d -> GroupNorm -> ConvTranspose1d -> BatchNorm1d -> Conv3d path of shapes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(4, 8)
        self.up = nn.ConvTranspose1d(8, 6, 2, stride=2)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Conv1d(6, 2, 1)

    def forward(self, x):
        return self.head(self.bn(self.up(torch.relu(self.norm(self.conv(x))))))


def test_conv1d_groupnorm_convtranspose_batchnorm1d():
    torch.manual_seed(0)
    net = ConvZoo().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
    keep_groups = torch.tensor([1.0, 1, 0, 0, 1, 1, 1, 1])  # whole GroupNorm groups (pairs of channels)
    keep_up = torch.tensor([1.0, 0, 1, 1, 0, 1])
    masks = {
        "conv": {"weight": keep_groups[:, None, None].expand(8, 3, 3), "bias": keep_groups},
        "norm": {"weight": keep_groups, "bias": keep_groups},
        "up": {"weight": keep_up[None, :, None].expand(8, 6, 2), "bias": keep_up},
        "bn": {"weight": keep_up, "bias": keep_up},
    }
    x = torch.randn(2, 3, 10)
    with torch.no_grad():
        for name, targets in masks.items():
            for t, m in targets.items():
                getattr(net, name).get_parameter(t).mul_(m)
        expected = net(x)
    ModelSpeedup(net, torch.randn(1, 3, 10), masks).speedup_model()
    assert (net.conv.out_channels, net.norm.num_groups, net.norm.num_channels) == (6, 3, 6)
    assert (net.up.in_channels, net.up.out_channels, net.bn.num_features, net.head.in_channels) == (6, 4, 4, 4)
    assert torch.allclose(net(x), expected, atol=1e-5)


def test_batchnorm_output_masks_and_node_infos():
    """NNI's fusion examples mask each BatchNorm's ``_output_`` along its conv, and pqd_fuse walks
    ``node_infos`` (a module-level torch.fx graph) to cut calibration down to the kept channels."""
    torch.manual_seed(0)
    net = ResidualConvNet().eval()
    aligned = {"align": {"module_name": "conv3", "target_name": "weight", "dims": [0]}, "granularity": "per_channel"}
    pruner = L1NormPruner(net, [{"op_names": ["conv3"], "sparse_ratio": 0.25},
                                {"op_names": ["bn3"], "target_names": ["_output_"],
                                 "target_settings": {"_output_": aligned}}])
    _, masks = pruner.compress()
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        expected = net(x)  # conv3's rows and bn3's output channels masked
    pruner.unwrap_model()
    assert masks["bn3"]["_output_"].shape == (16,)
    original = {name: m.weight.shape for name, m in net.named_modules() if getattr(m, "weight", None) is not None}
    speedup = ModelSpeedup(net, torch.randn(2, 3, 12, 12), masks)
    with pytest.raises(ReplacementError, match="speedup_model"):
        speedup.node_infos
    speedup.speedup_model()
    with torch.no_grad():
        assert torch.allclose(net(x), expected, atol=1e-5)
    assert net.conv3.out_channels == net.bn3.num_features == net.fc.in_features == 12

    infos = speedup.node_infos
    calls = [n for n in infos if n.op == "call_module"]
    # one node per call: the shared ReLU runs three times; the residual add is a function between modules
    assert [n.target for n in calls] == ["conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3", "relu",
                                         "pool", "fc"]
    assert {n.op for n in infos} == {"placeholder", "call_module", "call_function", "output"}
    modules = dict(net.named_modules())

    def kept_channels(mask: torch.Tensor) -> int:  # pqd_fuse's reduction: every dim but 1
        return int((mask.sum([d for d in range(mask.dim()) if d != 1]) > 0).sum())

    for node in calls:
        module = modules[node.target]
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            weight = module.weight
            widths = (weight.shape[1] * getattr(module, "groups", 1), weight.shape[0]) if weight.dim() > 1 else \
                (weight.shape[0], weight.shape[0])
            assert kept_channels(infos[node.args[0]].output_masks) == widths[0]
            assert kept_channels(infos[node].output_masks) == widths[1]
            weight_mask = infos[node].param_masks["weight"]
            assert weight_mask.shape == original[node.target]  # masks keep the original shapes
            rows = weight_mask.flatten(1).sum(1) if weight_mask.dim() > 1 else weight_mask
            assert int(rows.gt(0).sum()) == widths[1]
    assert int(infos[calls[6]].output_masks[0, :, 0, 0].sum()) == 12  # conv3's output: the kept channels


def test_activation_masks_without_an_exact_fold_are_refused():
    net = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, groups=2)).eval()
    masks = {"1": {"_input_": torch.tensor([1., 0., 1., 1., 1., 1., 1., 1.])}}
    with pytest.raises(ReplacementError, match="ungrouped"):
        ModelSpeedup(net, torch.randn(1, 4, 6, 6), masks).speedup_model()
