"""NNI 3.0's test assets, rebuilt for hubcompress: the same small MNIST net (a grouped conv and
a residual add), with random tensors of MNIST's shapes instead of the dataset, and the same
evaluators (a plain PyTorch loop, and a Lightning Trainer + data module)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hubcompress.compression import TorchEvaluator, trace

BATCH = 4


class SimpleTorchModel(nn.Module):
    """NNI's test net: conv2 has 4 groups, and conv2's and conv3's outputs are added."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, groups=4)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 24 * 24, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = self.bn2(self.conv2(x)) + self.bn3(self.conv3(x))
        x = self.fc2(self.fc1(x.reshape(x.shape[0], -1)))
        return F.log_softmax(x, -1)


def mnist_like(n: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def training_step(batch, model: nn.Module) -> torch.Tensor:
    x, y = batch
    return F.nll_loss(model(x), y)


def training_model(model, optimizer, training_step, scheduler=None, max_steps=None, max_epochs=None):
    """NNI's training function: honours max_steps and max_epochs (50 steps when neither)."""
    model.train()
    loader = DataLoader(mnist_like(), batch_size=BATCH)
    max_epochs = max_epochs or 1
    max_steps = max_steps or 50
    steps = 0
    for _ in range(max_epochs):
        for batch in loader:
            optimizer.zero_grad()
            training_step(batch, model).backward()
            optimizer.step()
            steps += 1
            if steps == max_steps:
                return
        if scheduler is not None:
            scheduler.step()


def evaluating_model(model: nn.Module) -> float:
    model.eval()
    correct = 0
    data = mnist_like(32, seed=1)
    with torch.no_grad():
        for x, y in DataLoader(data, batch_size=BATCH):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(data)


def create_pytorch_evaluator(model: nn.Module) -> TorchEvaluator:
    optimizer = trace(torch.optim.SGD)(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = trace(torch.optim.lr_scheduler.ExponentialLR)(optimizer, 0.1)
    return TorchEvaluator(training_model, optimizer, training_step, scheduler,
                          dummy_input=torch.rand(BATCH, 1, 28, 28), evaluating_func=evaluating_model)


def lightning_classes():
    """NNI's Lightning model and data module (lightning is optional: callers skip without it)."""
    import lightning.pytorch as pl

    class SimpleLightningModel(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = SimpleTorchModel()

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.nll_loss(self(x), y)
            self.log("train_loss", loss)
            return loss

        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("default", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            optimizer = trace(torch.optim.SGD)(self.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            scheduler = trace(torch.optim.lr_scheduler.ExponentialLR)(optimizer, 0.1)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    class MNISTDataModule(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(mnist_like(), batch_size=BATCH)

        def test_dataloader(self):
            return DataLoader(mnist_like(16, seed=1), batch_size=BATCH)

    return SimpleLightningModel, MNISTDataModule


def create_lightning_evaluator():
    import lightning.pytorch as pl

    from hubcompress.compression import LightningEvaluator

    _, data_module_cls = lightning_classes()
    trainer = trace(pl.Trainer)(accelerator="cpu", devices=1, max_epochs=1, max_steps=50, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return LightningEvaluator(trainer, trace(data_module_cls)(), dummy_input=torch.rand(BATCH, 1, 28, 28))


def create_model(model_type: str):
    """NNI's ``create_model``: the model, its config lists by kind, and a dummy input."""
    prefix = "model." if model_type == "lightning" else ""
    config_list_dict = {
        "pruning": [
            {"op_types": ["Linear"], "exclude_op_names": [f"{prefix}fc2"], "sparse_ratio": 0.75,
             "granularity": "out_channel"},
            {"op_names": [f"{prefix}conv1", f"{prefix}conv2", f"{prefix}conv3"], "sparse_ratio": 0.75,
             "granularity": "out_channel"},
        ],
        "distillation": [
            {"op_types": ["Linear"], "lambda": 0.75},
            {"op_names": [f"{prefix}conv1", f"{prefix}conv2", f"{prefix}conv3"], "lambda": 0.75},
        ],
        "quantization": [
            {"op_names": [f"{prefix}fc1", f"{prefix}fc2"], "quant_dtype": "int8"},
            {"op_names": [f"{prefix}conv1", f"{prefix}conv2", f"{prefix}conv3"], "quant_dtype": "int8",
             "fuse_names": [(f"{prefix}conv1", f"{prefix}bn1"), (f"{prefix}conv2", f"{prefix}bn2"),
                            (f"{prefix}conv3", f"{prefix}bn3")]},
        ],
    }
    torch.manual_seed(0)
    if model_type == "lightning":
        model = lightning_classes()[0]()
    elif model_type == "pytorch":
        model = SimpleTorchModel()
    else:
        raise ValueError(model_type)
    return model, config_list_dict, torch.rand(BATCH, 1, 28, 28)


def create_evaluator(model_type: str, model: nn.Module):
    return create_lightning_evaluator() if model_type == "lightning" else create_pytorch_evaluator(model)
