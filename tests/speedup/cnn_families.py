"""The CNNs NNI users prune, for the speedup tests: torchvision's own model definitions when
torchvision imports, plus a small U-Net (torchvision has none) and helpers to make BatchNorm look
trained (random statistics, so a masked channel carries a non-zero shift, as in real checkpoints).

torchvision beside this project's CPU torch 2.13.0: PyPI's torchvision 0.28.0 (the release built
for torch 2.13) installs without touching torch, but its C++ ops are built against the CUDA torch
(``libc10_cuda.so``), so they do not load, and its ``import`` then fails registering fake kernels
for ``torchvision::nms`` / ``qnms`` ('operator torchvision::nms does not exist'). The pure-Python
model definitions need none of the C++ ops: :func:`import_torchvision` declares those two op
schemas (no kernels) when that is the only failure, and torchvision imports. It is installed
outside site-packages, in ``.venv/vision`` (``pip install --no-deps --target .venv/vision
torchvision==0.28.0``): a torchvision that transformers can see but not import would break its
image models (ViT) in every other process.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

VISION_DIR = Path(sys.prefix) / "vision"
_BROKEN_OPS = ("nms", "qnms")
_declared: list[torch.library.Library] = []


def import_torchvision() -> tuple[ModuleType | None, str]:
    """(torchvision, "") or (None, why it is not usable). On failure nothing is left behind (no
    path, no half-imported modules) for transformers or lightning to trip over later."""
    added = "torchvision" not in sys.modules and VISION_DIR.is_dir() and str(VISION_DIR) not in sys.path
    if added:
        sys.path.append(str(VISION_DIR))
    module, why = _import()
    if module is None:
        _forget()
        if added:
            sys.path.remove(str(VISION_DIR))
    return module, why


def torchvision_or_skip() -> ModuleType:
    """torchvision for a test, or the test skipped with the reason it is not usable."""
    tv, why = import_torchvision()
    if tv is None:
        pytest.skip(why)
    return tv


def _import() -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module("torchvision"), ""
    except ImportError as exc:
        return None, (f"torchvision is not installed ({exc}); pip install --no-deps --target {VISION_DIR} "
                      "torchvision==0.28.0")
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            return None, f"torchvision does not import: {exc}"
    _forget()
    if not _declared:
        lib = torch.library.Library("torchvision", "DEF")  # schemas only, so the import can register fakes
        for op in _BROKEN_OPS:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _declared.append(lib)
    try:
        return importlib.import_module("torchvision"), ""
    except Exception as exc:  # noqa: BLE001 - report any failure as the skip reason
        return None, f"torchvision does not import beside torch {torch.__version__}: {exc}"


def _forget() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def trained_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm statistics and affine parameters like a trained network's."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.5)
    return model.eval()


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A two-level U-Net: encoder, bottleneck, a transposed-conv upsample and a bilinear one, each
    concatenated with the encoder's skip features."""

    def __init__(self, cin: int = 3, classes: int = 2, width: int = 8):
        super().__init__()
        self.enc1 = _DoubleConv(cin, width)
        self.enc2 = _DoubleConv(width, 2 * width)
        self.mid = _DoubleConv(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = _DoubleConv(4 * width, 2 * width)
        self.dec1 = _DoubleConv(3 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        m = self.mid(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
        up = nn.functional.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up, e1], dim=1))
        return self.head(d1)
