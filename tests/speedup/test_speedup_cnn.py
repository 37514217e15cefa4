"""Speedup on the CNNs NNI users prune (issue 13): grouped and depthwise convolutions, in-place
activations, subtraction and division after a pruned conv, BatchNorm's shift on masked channels
(folded into the next layer), and torchvision's ResNet, MobileNet, VGG and EfficientNet plus a
U-Net, each at 50% of its conv channels through L1NormPruner with an NNI-style config list."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hubcompress.compression.pruning import L1NormPruner
from hubcompress.speedup import (
    ModelSpeedup,
    auto_set_denpendency_group_ids,
    auto_set_dependency_group_ids,
)

from .cnn_families import UNet, torchvision_or_skip, trained_batch_norms


def masks_of(model: nn.Module, config_list: list[dict]) -> dict:
    pruner = L1NormPruner(model, config_list)
    _, masks = pruner.compress()
    masks = {m: {t: v.contiguous() for t, v in ts.items()} for m, ts in masks.items()}
    pruner.unwrap_model()
    return masks


def channel_masks(out_channels: int, in_channels: int, kernel: int, keep: list[int]) -> dict:
    vector = torch.zeros(out_channels)
    vector[keep] = 1.0
    return {"weight": vector[:, None, None, None].expand(out_channels, in_channels, kernel, kernel).contiguous(),
            "bias": vector}


def shrink_and_compare(net: nn.Module, masks: dict, x: torch.Tensor, fresh: torch.Tensor) -> ModelSpeedup:
    """Speedup on ``x``; the sped-up net must give the masked net's outputs on other inputs too."""
    with torch.no_grad():
        for name, targets in masks.items():
            for target, mask in targets.items():
                net.get_submodule(name).get_parameter(target).mul_(mask)
        expected = net(fresh)
    speedup = ModelSpeedup(net, x, masks)
    speedup.speedup_model()
    with torch.no_grad():
        got = net(fresh)
    assert float((got - expected).abs().max()) <= 1e-4 * max(1.0, float(expected.abs().max()))
    return speedup


# --- 5. grouped and depthwise convolutions ---------------------------------------------------------

def test_grouped_conv_after_a_pruned_conv_keeps_whole_groups():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 3, groups=4), nn.Flatten(),
                        nn.Linear(32 * 24 * 24, 10)).eval()
    x, fresh = torch.randn(2, 1, 28, 28), torch.randn(3, 1, 28, 28)
    # L1 at 50% cuts through every group of the grouped conv: nothing can go, nothing crashes
    report = shrink_and_compare(net, masks_of(net, [{"op_names": ["0"], "sparse_ratio": 0.5}]), x, fresh).report
    assert net[1].groups == 4 and "0" in report.shortfalls
    # masking whole groups (input channels 4..11 are groups 1 and 2) removes them
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 3, groups=4), nn.Flatten(),
                        nn.Linear(32 * 24 * 24, 10)).eval()
    shrink_and_compare(net, {"0": channel_masks(16, 1, 3, [0, 1, 2, 3, 12, 13, 14, 15])}, x, fresh)
    assert (net[0].out_channels, net[1].in_channels, net[1].out_channels, net[1].groups) == (8, 8, 16, 2)
    assert net[3].in_features == 16 * 24 * 24


def test_depthwise_conv_ties_channel_i_in_to_channel_i_out():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Conv2d(16, 16, 3, groups=16), nn.Flatten(),
                        nn.Linear(16 * 24 * 24, 10)).eval()
    masks = masks_of(net, [{"op_names": ["0"], "sparse_ratio": 0.5}])
    shrink_and_compare(net, masks, torch.randn(2, 1, 28, 28), torch.randn(3, 1, 28, 28))
    assert (net[0].out_channels, net[1].in_channels, net[1].out_channels, net[1].groups) == (8, 8, 8, 8)
    # a depthwise conv with a channel multiplier of 2: channel i in feeds channels 2i, 2i+1 out
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 16, 3, groups=8), nn.Conv2d(16, 4, 1)).eval()
    shrink_and_compare(net, {"0": channel_masks(8, 1, 3, [0, 3, 5])}, torch.randn(2, 1, 12, 12), torch.randn(3, 1, 12, 12))
    assert (net[1].in_channels, net[1].out_channels, net[1].groups, net[2].in_channels) == (3, 6, 3, 6)


def test_masks_on_a_depthwise_conv_itself():
    torch.manual_seed(0)
    net = trained_batch_norms(nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(inplace=True),
                                            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16),
                                            nn.ReLU6(inplace=True), nn.Conv2d(16, 8, 1, bias=False)))
    masks = masks_of(net, [{"op_names": ["3"], "sparse_ratio": 0.5}])
    shrink_and_compare(net, masks, torch.randn(2, 3, 8, 8), torch.randn(3, 3, 8, 8))
    # the depthwise channel's BN shift is folded into the 1x1 conv's (new) bias; the expand conv follows
    assert (net[0].out_channels, net[1].num_features, net[3].groups, net[4].num_features) == (8, 8, 8, 8)
    assert net[6].in_channels == 8 and net[6].bias is not None


# --- 6. in-place activations -------------------------------------------------------------------------

class InPlaceBlock(nn.Module):
    """torchvision's BasicBlock style: ReLU(inplace=True) and ``out += identity``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        identity = self.relu(self.stem(x))
        out = self.relu(self.conv1(identity))
        out = self.conv2(out)
        out += identity
        return self.head(F.hardtanh_(out))


def test_in_place_activations_and_adds():
    torch.manual_seed(0)
    net = InPlaceBlock().eval()
    masks = masks_of(net, [{"op_names": ["conv1"], "sparse_ratio": 0.5}])
    before = net.conv1.weight.clone()
    shrink_and_compare(net, masks, torch.randn(2, 3, 8, 8), torch.randn(3, 3, 8, 8))
    assert (net.conv1.out_channels, net.conv2.in_channels) == (8, 8)
    assert torch.equal(net.conv1.weight, before[masks["conv1"]["bias"].bool()])  # nothing written in place


# --- 7. subtraction and division after a pruned conv ----------------------------------------------------

class Arithmetic(nn.Module):
    def __init__(self, kind: str, padding: int = 0):
        super().__init__()
        self.kind = kind
        self.c1 = nn.Conv2d(1, 16, 3)
        self.c2 = nn.Conv2d(16, 8, 3, padding=padding)

    def op(self, y):
        if self.kind == "sub":
            return y - 0.5
        if self.kind == "rsub":
            return 1.0 - y
        if self.kind == "div":
            return y / 3.0
        if self.kind == "tensor_div":
            return y / (torch.sigmoid(y) + 1.0)
        return F.silu(y) - torch.tanh(y)

    def forward(self, x):
        # the op after c2 too: with no backward rule it made c2's input, then c1, unused (Conv2d(1, 0))
        return self.op(self.c2(self.op(self.c1(x))))


@pytest.mark.parametrize("kind", ["sub", "rsub", "div", "tensor_div", "silu_minus_tanh"])
def test_sub_rsub_div_keep_the_kept_channels(kind):
    torch.manual_seed(0)
    net = Arithmetic(kind).eval()
    masks = masks_of(net, [{"op_names": ["c1"], "sparse_ratio": 0.5}])
    speedup = shrink_and_compare(net, masks, torch.randn(2, 1, 12, 12), torch.randn(3, 1, 12, 12))
    # exactly the masked half goes (x - c of a removed channel is a constant, folded into c2's bias)
    assert (net.c1.out_channels, net.c2.in_channels) == (8, 8)
    assert not speedup.report.shortfalls


def test_constant_into_a_padded_conv_keeps_one_carrier_channel():
    torch.manual_seed(0)
    net = Arithmetic("sub", padding=1).eval()
    masks = masks_of(net, [{"op_names": ["c1"], "sparse_ratio": 0.5}])
    speedup = shrink_and_compare(net, masks, torch.randn(2, 1, 12, 12), torch.randn(3, 1, 12, 12))
    # zero padding: the constant's contribution differs at the border, so one constant channel
    # stays and carries the others' weights
    assert (net.c1.out_channels, net.c2.in_channels) == (9, 9)
    assert speedup.report.folded == {"c2": 7}


# --- 8. Conv -> BatchNorm -> ReLU -> Conv -------------------------------------------------------------

@pytest.mark.parametrize("padding, kept", [(0, 8), (1, 9)])
def test_masked_conv_and_its_batchnorm_shrink(padding, kept):
    torch.manual_seed(0)
    net = trained_batch_norms(nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                                            nn.Conv2d(16, 8, 3, padding=padding, bias=False)))
    masks = masks_of(net, [{"op_types": ["Conv2d"], "op_names": ["0"], "sparse_ratio": 0.5}])
    speedup = shrink_and_compare(net, masks, torch.randn(2, 1, 12, 12), torch.randn(3, 1, 12, 12))
    assert (net[0].out_channels, net[1].num_features, net[3].in_channels) == (kept, kept, kept)
    assert speedup.report.folded == {"3": 16 - kept}


# --- the families ----------------------------------------------------------------------------------

def _vgg11_bn_narrow(tv):
    """torchvision's VGG class and make_layers at a quarter of VGG-11's widths, with a classifier
    of the same shape but 64 wide (the stock 25088x4096 one alone costs seconds to build)."""
    from torchvision.models.vgg import VGG, make_layers

    with torch.device("meta"):
        model = VGG(nn.Sequential(), num_classes=10, init_weights=False)
    model.features = make_layers([16, "M", 32, "M", 64, 64, "M", 128, 128, "M", 128, 128, "M"], batch_norm=True)
    model.classifier = nn.Sequential(nn.Linear(128 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
    return model


FAMILIES = {
    # name: (builder, a masked conv and the BatchNorm after it)
    "resnet18": (lambda tv: tv.models.resnet18(num_classes=10), ("layer1.0.conv1", "layer1.0.bn1")),
    "resnet50": (lambda tv: tv.models.resnet50(num_classes=10), ("layer2.0.conv2", "layer2.0.bn2")),
    "mobilenet_v2": (lambda tv: tv.models.mobilenet_v2(width_mult=0.5, num_classes=10),
                     ("features.2.conv.0.0", "features.2.conv.0.1")),
    "mobilenet_v3_small": (lambda tv: tv.models.mobilenet_v3_small(num_classes=10),
                           ("features.4.block.0.0", "features.4.block.0.1")),
    "vgg11_bn": (_vgg11_bn_narrow, ("features.4", "features.5")),
    "efficientnet_b0": (lambda tv: tv.models.efficientnet_b0(num_classes=10),
                        ("features.2.0.block.0.0", "features.2.0.block.0.1")),
}


@pytest.fixture(scope="module")
def torchvision():
    return torchvision_or_skip()


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def check_family(model: nn.Module, conv: str, bn: str, config_list: list[dict] | None = None,
                 nni_config: dict | None = None) -> ModelSpeedup:
    """NNI's own recipe (its test_speedup_torchvision): every Conv2d at 50%, dependency groups
    set from the traced graph (and each BatchNorm aligned to its conv); then speedup must give
    the masked model's outputs, remove every masked channel, and report params and FLOPs."""
    torch.manual_seed(0)
    model = trained_batch_norms(model)
    x, fresh = torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32)
    if config_list is None:
        config = nni_config or {"op_types": ["Conv2d"], "sparse_ratio": 0.5}
        config_list = auto_set_dependency_group_ids(model, [config], x)
    masks = masks_of(model, config_list)
    width = model.get_submodule(conv).out_channels
    params, flops = sum(p.numel() for p in model.parameters()), _flops(model, x)
    speedup = shrink_and_compare(model, masks, x, fresh)
    report = speedup.report
    assert report.params_before == params and report.params_after == sum(p.numel() for p in model.parameters())
    assert report.flops_before == flops and report.flops_after < 0.75 * flops
    assert report.params_after < 0.75 * params
    assert model.get_submodule(bn).num_features == model.get_submodule(conv).out_channels < width
    return speedup


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_torchvision_family_at_half_the_channels(torchvision, family):
    build, (conv, bn) = FAMILIES[family]
    speedup = check_family(build(torchvision), conv, bn)
    assert not speedup.report.shortfalls  # every masked channel went
    assert speedup.report.params_after < 0.4 * speedup.report.params_before  # half of in x half of out


def test_resnet18_without_dependency_groups(torchvision):
    # a plain NNI 2-style config: residual convs masked apart keep their union (reported), each
    # block's inner conv shrinks, its BatchNorm shift folded into the next conv (one carrier)
    speedup = check_family(torchvision.models.resnet18(num_classes=10), "layer1.0.conv1", "layer1.0.bn1",
                           [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}])
    assert "conv1" in speedup.report.shortfalls  # the stem feeds layer1's residual stream
    assert speedup.report.folded["layer1.0.conv2"] == 31


def test_unet_with_concatenated_skips():
    # the 1x1 head makes the model's output: its channels are not the pruner's to take
    speedup = check_family(UNet(), "enc1.0", "enc1.1",
                           nni_config={"op_types": ["Conv2d", "ConvTranspose2d"], "exclude_op_names": ["head"],
                                       "sparse_ratio": 0.5})
    assert speedup.model.up2.out_channels == 8
    assert not speedup.report.shortfalls


def test_dependency_groups_follow_residuals_depthwise_convs_and_se_gates(torchvision):
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    configs = auto_set_denpendency_group_ids(model, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}],
                                             torch.randn(1, 3, 32, 32))
    group = {c["op_names"][0]: c.get("dependency_group_id") for c in configs}
    # expand conv, depthwise conv and the SE gate's second conv share the block's channels
    block = "features.4.block"
    assert group[f"{block}.0.0"] == group[f"{block}.1.0"] == group[f"{block}.2.fc2"] is not None
    assert group[f"{block}.2.fc1"] != group[f"{block}.0.0"]
    aligned = {c["op_names"][0]: c["target_settings"]["weight"]["align"]["module_name"]
               for c in configs if "target_settings" in c}
    assert aligned[f"{block}.0.1"] == f"{block}.0.0"


class LearnedPrompt(nn.Module):
    """A learned input (constant for every input, but not made so by masks) read by a Linear."""

    def __init__(self):
        super().__init__()
        self.prompt = nn.Parameter(torch.randn(1, 8))
        self.proj, self.head = nn.Linear(8, 8), nn.Linear(8, 4)
        self.body, self.out = nn.Linear(6, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.proj(self.prompt)) + self.out(torch.relu(self.body(x)))


def test_only_constants_made_by_masks_are_folded():
    torch.manual_seed(0)
    net = LearnedPrompt().eval()
    speedup = shrink_and_compare(net, masks_of(net, [{"op_names": ["body"], "sparse_ratio": 0.5}]),
                                 torch.randn(2, 6), torch.randn(3, 6))
    assert (net.body.out_features, net.out.in_features) == (4, 4)
    assert (net.proj.out_features, net.head.in_features) == (8, 8) and "head" not in speedup.report.folded
