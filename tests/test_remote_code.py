"""The self-contained modeling file rebuilds what speedup makes: narrowed Linear / LayerNorm /
Embedding, grouped convolutions, and a bias speedup added when it folded constant channels."""

from __future__ import annotations

import torch
from torch import nn

from hubcompress.remote_code import narrow


def test_narrow_rebuilds_grouped_convs_and_added_biases() -> None:
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8, bias=False), nn.Linear(8, 4))
    spec = {"modules": {
        "0": {"class": "Conv2d", "shapes": {"weight": [4, 3, 3, 3], "bias": [4]}, "attributes": {"out_channels": 4}},
        "1": {"class": "Conv2d", "shapes": {"weight": [4, 1, 3, 3], "bias": [4]},
              "attributes": {"in_channels": 4, "out_channels": 4, "groups": 4, "kernel_size": [3, 3]}},
        "2": {"class": "Linear", "shapes": {"weight": [4, 4], "bias": [4]}, "attributes": {"in_features": 4}}}}
    narrow(small, spec)
    assert small[1].groups == 4 and small[1].bias is not None and small[1].bias.shape == (4,)
    assert isinstance(small[1].kernel_size, tuple)  # JSON lists come back as the tuples modules hold
    out = small[2](small[1](small[0](torch.randn(2, 3, 7, 7))).mean((2, 3)))
    assert out.shape == (2, 4)
