"""Small training loops for the evaluator-driven pruners."""

from __future__ import annotations

import torch
from torch import nn

from hubcompress.compression import TorchEvaluator


def conv_batches(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def conv_training_step(batch, model):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def loop_forever(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
    """A user loop that ignores max_steps: the evaluator must stop it."""
    batches = conv_batches()
    while True:
        for batch in batches:
            optimizers.zero_grad()
            training_step(batch, model).backward()
            optimizers.step()


def conv_evaluator(model: nn.Module, lr: float = 0.01) -> TorchEvaluator:
    return TorchEvaluator(loop_forever, torch.optim.SGD(model.parameters(), lr=lr), conv_training_step)


def zero_fraction(mask: torch.Tensor) -> float:
    return 1.0 - float(mask.float().mean())
