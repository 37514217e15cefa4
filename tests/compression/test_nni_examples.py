"""NNI 3.0's compression examples (``examples/compression`` in microsoft/nni: pruning, fusion,
quantization, evaluator) as their users run them, with only the imports changed.

Each test is the example's program: the same call forms, config lists and call order. What is
scaled down: CIFAR-10 and MNIST are random tensors of their shapes (2 samples a batch), every
"N epochs" / "N steps" is one or a few steps, and the dummy input is CIFAR's 32x32 instead of
224x224. The models are torchvision's resnet18 / mobilenet_v3_small definitions without
pretrained weights, on the CPU (the quantization examples say ``device = 'cuda'``).

Besides imports (``nni.common.types.SCHEDULER`` is torch's ``LRScheduler``), three changes mend
the evaluator examples, which fail under NNI too: ``LambdaLR(lr_lambda=lambda epoch: 1 / epoch)``
divides by zero when built, so it is ``1 / (epoch + 1)``; the Lightning example's module calls
``self(x)`` without a ``forward`` and its ``MyDataModule`` is ``pass`` (the user's own go there);
its ``TensorBoardLogger`` needs tensorboard, which is not installed here, so it is ``CSVLogger``.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import SGD, Adam, Optimizer
from torch.optim.lr_scheduler import LRScheduler as SCHEDULER  # was: from nni.common.types import SCHEDULER
from torch.utils.data import DataLoader, TensorDataset

from hubcompress.compression import TorchEvaluator, trace  # was: from nni.compression import TorchEvaluator; nni.trace
from hubcompress.compression.distillation import DynamicLayerwiseDistiller
from hubcompress.compression.pruning import (
    AGPPruner,
    FPGMPruner,
    L1NormPruner,
    L2NormPruner,
    LinearPruner,
    SlimPruner,
    TaylorPruner,
)
from hubcompress.compression.quantization import (
    BNNQuantizer,
    DoReFaQuantizer,
    LsqQuantizer,
    PtqQuantizer,
    QATQuantizer,
    Quantizer,  # was: from nni.compression.base.compressor import Quantizer
)
from hubcompress.compression.utils import auto_set_denpendency_group_ids
from hubcompress.speedup import ModelSpeedup

from ..speedup.cnn_families import torchvision_or_skip

device = torch.device("cpu")
CIFAR, MNIST = (3, 32, 32), (1, 28, 28)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for these small models: on this shared 2-core machine two threads
    spin-waiting on each other took 3-5x the time (measured under the others' load: these tests
    took 24 s with one thread, 132-152 s with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def torchvision():
    return torchvision_or_skip()


def random_loader(shape: tuple[int, ...], batches: int = 1, batch_size: int = 2, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    n = batches * batch_size
    data = TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size)


# --- examples/compression/models.py, ported -----------------------------------------------------------
class Models:
    """NNI's models.py: builders, data, optimizer, training loop, evaluation (CIFAR-10 shaped)."""

    def __init__(self, tv: Any):
        self.tv = tv

    def build_resnet18(self) -> nn.Module:
        torch.manual_seed(0)
        model = self.tv.models.resnet18(weights=None)  # NNI: pretrained=True
        model.fc = torch.nn.Linear(512, 10)
        return model.to(device)

    def build_mobilenet_v3(self) -> nn.Module:
        torch.manual_seed(0)
        model = self.tv.models.mobilenet_v3_small(weights=None)
        model.classifier[-1] = torch.nn.Linear(1024, 10)
        return model.to(device)


def prepare_dataloader(batch_size: int = 2) -> tuple[DataLoader, DataLoader]:
    return random_loader(CIFAR, batch_size=batch_size), random_loader(CIFAR, batch_size=batch_size, seed=1)


def prepare_optimizer(model: nn.Module) -> Optimizer:
    optimize_params = [param for param in model.parameters() if param.requires_grad]
    return trace(Adam)(optimize_params, lr=0.001)


def train(model: nn.Module, optimizer: Optimizer, training_step: Callable, lr_scheduler: Any, max_steps: int | None,
          max_epochs: int | None) -> None:
    assert max_epochs is not None or max_steps is not None
    train_loader, test_loader = prepare_dataloader()
    max_steps = max_steps if max_steps else max_epochs * len(train_loader)
    max_epochs = max_steps // len(train_loader) + (0 if max_steps % len(train_loader) == 0 else 1)
    count_steps = 0
    model.train()
    for epoch in range(max_epochs):
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = training_step((data, target), model)
            loss.backward()
            optimizer.step()
            count_steps += 1
            if count_steps >= max_steps:
                evaluate(model, test_loader)
                return
        evaluate(model, test_loader)


def evaluate(model: nn.Module, test_loader: DataLoader) -> float:
    model.eval()
    correct = 0.0
    with torch.no_grad():
        for data, target in test_loader:
            pred = model(data.to(device)).argmax(dim=1, keepdim=True)
            correct += pred.eq(target.to(device).view_as(pred)).sum().item()
    return 100 * correct / len(test_loader.dataset)


def training_step(batch: Any, model: nn.Module) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


# --- what the examples rely on -----------------------------------------------------------------------
def n_params(model: nn.Module) -> int:
    return sum(param.numel() for param in model.parameters())


def conv_params(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


def masked_outputs(model: nn.Module, masks: dict, x: torch.Tensor) -> torch.Tensor:
    """The masked model's outputs (eval mode): each parameter times its mask, each masked module
    output (a BatchNorm's ``_output_``, one value per channel) times its mask."""
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, targets in masks.items():
            module = reference.get_submodule(name)
            for target, mask in targets.items():
                if target.startswith("_output_"):
                    module.register_forward_hook(lambda m, i, out, mask=mask: out * mask.reshape(
                        [-1 if d == 1 else 1 for d in range(out.dim())]))
                else:
                    getattr(module, target).mul_(mask)
        return reference(x)


def assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-4 * max(1.0, float(expected.abs().max()))


def speedup_and_check(model: nn.Module, dummy_input: torch.Tensor, masks: dict) -> tuple[nn.Module, ModelSpeedup]:
    """The examples' ``ModelSpeedup(model, dummy_input, masks).speedup_model()``, checked: fewer
    parameters, and on a fresh input the masked model's outputs."""
    fresh = torch.rand(3, *CIFAR, generator=torch.Generator().manual_seed(7))
    expected = masked_outputs(model, masks, fresh)
    before, conv_before = n_params(model), conv_params(model)
    speedup = ModelSpeedup(model, dummy_input, masks)
    model = speedup.speedup_model()
    assert n_params(model) < before and conv_params(model) < 0.5 * conv_before
    with torch.no_grad():
        assert_same(model.eval()(fresh), expected)
    return model, speedup


def zero_rows(mask: torch.Tensor) -> float:
    return float((mask.flatten(1).amax(1) == 0).float().mean())


# --- pruning/*.py ------------------------------------------------------------------------------------
CONV_HALF = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]


@pytest.mark.parametrize("prune_type,build", [("l1", "build_resnet18"), ("l2", "build_resnet18"),
                                              ("fpgm", "build_mobilenet_v3")])
def test_norm_pruning(torchvision, prune_type, build):
    model = getattr(Models(torchvision), build)()
    optimizer = prepare_optimizer(model)
    train(model, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=1)
    _, test_loader = prepare_dataloader()

    dummy_input = torch.rand(2, *CIFAR).to(device)
    config_list = auto_set_denpendency_group_ids(model, copy.deepcopy(CONV_HALF), dummy_input)
    optimizer = prepare_optimizer(model)
    if prune_type == "l1":
        pruner = L1NormPruner(model, config_list)
    elif prune_type == "l2":
        pruner = L2NormPruner(model, config_list)
    else:
        pruner = FPGMPruner(model, config_list)
    _, masks = pruner.compress()
    pruner.unwrap_model()

    model, _ = speedup_and_check(model, dummy_input, masks)
    evaluate(model, test_loader)
    optimizer = prepare_optimizer(model)
    train(model, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=1)


def training_start(models: Models) -> tuple[nn.Module, torch.Tensor, list[dict], TorchEvaluator]:
    """The training-time pruning examples' start: resnet18, every conv at 50% in dependency
    groups, and an evaluator running the user's loop."""
    model = models.build_resnet18()
    dummy_input = torch.rand(2, *CIFAR).to(device)
    config_list = auto_set_denpendency_group_ids(model, copy.deepcopy(CONV_HALF), dummy_input)
    optimizer = prepare_optimizer(model)
    evaluator = TorchEvaluator(train, optimizer, training_step)
    return model, dummy_input, config_list, evaluator


@pytest.mark.parametrize("schedule_type", ["agp", "linear"])
def test_scheduled_pruning(torchvision, schedule_type):
    model, dummy_input, config_list, evaluator = training_start(Models(torchvision))
    sub_pruner = TaylorPruner(model, config_list, evaluator, training_steps=2)
    if schedule_type == "agp":
        scheduled_pruner = AGPPruner(sub_pruner, interval_steps=2, total_times=2)
    else:
        scheduled_pruner = LinearPruner(sub_pruner, interval_steps=2, total_times=2)
    _, masks = scheduled_pruner.compress(max_steps=2 * 2, max_epochs=None)
    scheduled_pruner.unwrap_model()

    assert evaluator.step_count == 4  # the user's loop ran the whole schedule
    assert zero_rows(masks["layer1.0.conv1"]["weight"]) == 0.5  # the schedule's final ratio
    model, _ = speedup_and_check(model, dummy_input, masks)
    optimizer = prepare_optimizer(model)
    train(model, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=1)


@pytest.mark.parametrize("pruner_cls", [SlimPruner, TaylorPruner], ids=["slim_pruning", "taylor_pruning"])
def test_training_pruners(torchvision, pruner_cls):
    model, dummy_input, config_list, evaluator = training_start(Models(torchvision))
    pruner = pruner_cls(model, config_list, evaluator, training_steps=2)
    _, masks = pruner.compress()
    pruner.unwrap_model()

    assert evaluator.step_count == 2
    model, _ = speedup_and_check(model, dummy_input, masks)
    train(model, prepare_optimizer(model), training_step, lr_scheduler=None, max_steps=None, max_epochs=1)


# --- fusion/pd_fuse.py and fusion/pqd_fuse.py ----------------------------------------------------------
def bn_aligned_pruning(model: nn.Module) -> list[dict]:
    """The fusion examples' pruning config: every conv at 50%, each BatchNorm's output aligned to its conv."""
    bn_list = [module_name for module_name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]
    return [{
        "op_types": ["Conv2d"],
        "sparse_ratio": 0.5,
    }, *[{
        "op_names": [name],
        "target_names": ["_output_"],
        "target_settings": {
            "_output_": {
                "align": {
                    "module_name": name.replace("bn", "conv") if "bn" in name else
                    name.replace("downsample.1", "downsample.0"),
                    "target_name": "weight",
                    "dims": [0],
                },
                "granularity": "per_channel",
            }
        },
    } for name in bn_list]]


def fusion_start(models: Models) -> tuple[nn.Module, nn.Module, torch.Tensor, TorchEvaluator, AGPPruner]:
    """The examples' shared start: a trained model, its teacher copy, and Taylor under AGP."""
    model = models.build_resnet18()
    train(model, prepare_optimizer(model), training_step, lr_scheduler=None, max_steps=None, max_epochs=1)
    teacher_model = models.build_resnet18()
    teacher_model.load_state_dict(pickle.loads(pickle.dumps(model.state_dict())))
    dummy_input = torch.rand(2, *CIFAR).to(device)
    config_list = auto_set_denpendency_group_ids(model, bn_aligned_pruning(model), dummy_input)
    evaluator = TorchEvaluator(train, prepare_optimizer(model), training_step)
    sub_pruner = TaylorPruner(model, config_list, evaluator, training_steps=2)
    return model, teacher_model, dummy_input, evaluator, AGPPruner(sub_pruner, interval_steps=2, total_times=2)


def teacher_predict(batch: Any, teacher_model: nn.Module) -> torch.Tensor:
    return teacher_model(batch[0])


D_CONFIG = [{"op_types": ["Conv2d"], "lambda": 0.1, "apply_method": "mse"}]


def test_pd_fuse(torchvision):
    model, teacher_model, dummy_input, evaluator, scheduled_pruner = fusion_start(Models(torchvision))
    distiller = DynamicLayerwiseDistiller.from_compressor(scheduled_pruner, D_CONFIG, teacher_model, teacher_predict,
                                                          0.1)
    # 2 x 2 pruning steps under the schedule, then 1 of fine-tuning (NNI: 30 x 100, then 3000)
    distiller.compress(max_steps=2 * 2 + 1, max_epochs=None)
    distiller.unwrap_model()
    distiller.unwrap_teacher_model()

    assert evaluator.step_count == 5
    assert not any(hasattr(m, "_hc_wrapper") for m in [*model.modules(), *teacher_model.modules()])
    masks = scheduled_pruner.get_masks()
    assert zero_rows(masks["bn1"]["_output_"][:, None]) == 0.5  # aligned to conv1's pruned channels
    model, _ = speedup_and_check(model, dummy_input, masks)
    assert model.bn1.num_features == model.conv1.out_channels == 32


Q_CONFIG = [{
    "op_types": ["Conv2d"],
    "quant_dtype": "int8",
    "target_names": ["_input_"],
    "granularity": "per_channel",
}, {
    "op_types": ["Conv2d"],
    "quant_dtype": "int8",
    "target_names": ["weight"],
    "granularity": "out_channel",
}, {
    "op_types": ["BatchNorm2d"],
    "quant_dtype": "int8",
    "target_names": ["_output_"],
    "granularity": "per_channel",
}]


def trans(calibration_config: dict, speedup: ModelSpeedup) -> dict:
    """pqd_fuse.py's function: cut each calibration entry down to the channels speedup kept."""
    for node, node_info in speedup.node_infos.items():
        if node.op == "call_module" and node.target in calibration_config:
            # assume the module only has one input and one output
            input_mask = speedup.node_infos[node.args[0]].output_masks
            param_mask = node_info.param_masks
            output_mask = node_info.output_masks

            module_cali_config = calibration_config[node.target]
            if "_input_0" in module_cali_config:
                reduce_dims = list(range(len(input_mask.shape)))
                reduce_dims.remove(1)
                idxs = torch.nonzero(input_mask.sum(reduce_dims), as_tuple=True)[0].cpu()
                module_cali_config["_input_0"]["scale"] = module_cali_config["_input_0"]["scale"].index_select(1, idxs)
                module_cali_config["_input_0"]["zero_point"] = \
                    module_cali_config["_input_0"]["zero_point"].index_select(1, idxs)
            if "_output_0" in module_cali_config:
                reduce_dims = list(range(len(output_mask.shape)))
                reduce_dims.remove(1)
                idxs = torch.nonzero(output_mask.sum(reduce_dims), as_tuple=True)[0].cpu()
                module_cali_config["_output_0"]["scale"] = \
                    module_cali_config["_output_0"]["scale"].index_select(1, idxs)
                module_cali_config["_output_0"]["zero_point"] = \
                    module_cali_config["_output_0"]["zero_point"].index_select(1, idxs)
            if "weight" in module_cali_config:
                reduce_dims = list(range(len(param_mask["weight"].shape)))
                reduce_dims.remove(0)
                idxs = torch.nonzero(param_mask["weight"].sum(reduce_dims), as_tuple=True)[0].cpu()
                module_cali_config["weight"]["scale"] = module_cali_config["weight"]["scale"].index_select(0, idxs)
                module_cali_config["weight"]["zero_point"] = \
                    module_cali_config["weight"]["zero_point"].index_select(0, idxs)
            if "bias" in module_cali_config:
                idxs = torch.nonzero(param_mask["bias"], as_tuple=True)[0].cpu()
                module_cali_config["bias"]["scale"] = module_cali_config["bias"]["scale"].index_select(0, idxs)
                module_cali_config["bias"]["zero_point"] = \
                    module_cali_config["bias"]["zero_point"].index_select(0, idxs)
    return calibration_config


def test_pqd_fuse(torchvision):
    model, teacher_model, dummy_input, evaluator, scheduled_pruner = fusion_start(Models(torchvision))
    quantizer = QATQuantizer.from_compressor(scheduled_pruner, Q_CONFIG, quant_start_step=2)
    distiller = DynamicLayerwiseDistiller.from_compressor(quantizer, D_CONFIG, teacher_model, teacher_predict, 0.1)
    distiller.compress(max_steps=2 * 2 + 1, max_epochs=None)
    fresh = torch.rand(3, *CIFAR, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        compressed = model.eval()(fresh)  # pruned and fake-quantized, before the wrappers go
    distiller.unwrap_model()
    distiller.unwrap_teacher_model()

    masks = scheduled_pruner.get_masks()
    speedup = ModelSpeedup(model, dummy_input, masks)
    model = speedup.speedup_model()
    calibration_config = trans(quantizer.get_calibration_config(), speedup)
    sim_quantizer = Quantizer(model, Q_CONFIG)
    sim_quantizer.update_calibration_config(calibration_config)

    modules = dict(model.named_modules())
    for name, entries in calibration_config.items():  # every entry now fits its shrunk module
        module = modules[name]
        channels = module.num_features if isinstance(module, nn.BatchNorm2d) else module.out_channels
        if "weight" in entries:
            assert entries["weight"]["scale"].shape[0] == channels
        if "_input_0" in entries:
            assert entries["_input_0"]["scale"].shape[1] == module.in_channels
        if "_output_0" in entries:
            assert entries["_output_0"]["scale"].shape[1] == channels
    assert modules["layer1.0.conv1"].in_channels == 32
    applied = sim_quantizer.get_calibration_config()["layer1.0.conv1"]["_input_0"]  # ranges follow the cut scales
    assert applied["scale"].shape == applied["tracked_min"].shape == applied["tracked_max"].shape == (1, 32, 1, 1)
    with torch.no_grad():  # the simulated-quantized small model computes what the compressed one did
        assert_same(model.eval()(fresh), compressed)
        sim_quantizer.unwrap_model()  # and the calibration is what makes it so (measured: 7% apart without)
        assert float((model(fresh) - compressed).abs().max()) > 1e-2 * float(compressed.abs().max())


# --- quantization/*.py (MNIST-shaped nets; bnn_example: CIFAR-10 shaped) ---------------------------------
class NaiveModel(torch.nn.Module):
    """qat_example's / dorefa_example's net; ``batchnorm=True`` is ptq_example's / lsq_example's."""

    def __init__(self, batchnorm: bool = False):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 20, 5, 1)
        self.conv2 = torch.nn.Conv2d(20, 50, 5, 1)
        self.fc1 = torch.nn.Linear(4 * 4 * 50, 500)
        self.fc2 = torch.nn.Linear(500, 10)
        self.relu1 = torch.nn.ReLU6()
        self.relu2 = torch.nn.ReLU6()
        self.relu3 = torch.nn.ReLU6()
        self.max_pool1 = torch.nn.MaxPool2d(2, 2)
        self.max_pool2 = torch.nn.MaxPool2d(2, 2)
        if batchnorm:
            self.batchnorm1 = torch.nn.BatchNorm2d(20)

    def forward(self, x):
        x = self.conv1(x)
        if hasattr(self, "batchnorm1"):
            x = self.batchnorm1(x)
        x = self.max_pool1(self.relu1(x))
        x = self.max_pool2(self.relu2(self.conv2(x)))
        x = x.view(-1, x.size()[1:].numel())
        x = self.relu3(self.fc1(x))
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


train_dataloader = random_loader(MNIST, batches=2)
test_dataloader = random_loader(MNIST, seed=1)


def mnist_training_step(batch, model) -> torch.Tensor:
    x, y = batch[0].to(device), batch[1].to(device)
    return F.nll_loss(model(x), y)


def training_model(model: nn.Module, optimizer: Optimizer | list[Optimizer], training_step: Callable,
                   scheduler: SCHEDULER | list[SCHEDULER] | None = None, max_steps: int | None = None,
                   max_epochs: int | None = None) -> None:
    """dorefa / lsq / ptq_example's loop (qat_example's is this without the lists and schedulers)."""
    model.train()
    max_epochs = max_epochs or (10 if max_steps is None else 100)
    current_steps = 0
    for _ in range(max_epochs):
        for batch in train_dataloader:
            optimizers = optimizer if isinstance(optimizer, list) else [optimizer]
            for opt in optimizers:
                opt.zero_grad()
            loss = training_step(batch, model)
            assert isinstance(loss, torch.Tensor)
            loss.backward()
            for opt in optimizers:
                opt.step()
            for sch in scheduler if isinstance(scheduler, list) else [scheduler] if scheduler is not None else []:
                sch.step()
            current_steps += 1
            if max_steps and current_steps == max_steps:
                return
        evaluating_model(model)


def evaluating_model(model: nn.Module) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in test_dataloader:
            correct += torch.argmax(model(x.to(device)), dim=1).eq(y.to(device)).sum().item()
    return correct / len(test_dataloader.dataset)


def output_on_grid(model: nn.Module, module_name: str, entry: dict, x: torch.Tensor) -> bool:
    """Whether ``module_name``'s output, as the quantized model computes it, lies on the grid of
    its calibration entry (``scale``, ``zero_point``): the quantizer really applies it."""
    seen = []
    handle = model.get_submodule(module_name).register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    levels = seen[0] / entry["scale"] + entry["zero_point"]
    return float((levels - levels.round()).abs().max()) < 1e-3


QUANT_CONFIG = [{
    "op_names": ["conv1", "conv2", "fc1", "fc2"],
    "target_names": ["_input_", "weight", "_output_"],
    "quant_dtype": "int8",
    "quant_scheme": "affine",
    "granularity": "default",
}, {
    "op_names": ["relu1", "relu2", "relu3"],
    "target_names": ["_output_"],
    "quant_dtype": "int8",
    "quant_scheme": "affine",
    "granularity": "default",
}]


def test_qat_example():
    torch.manual_seed(1024)
    model = NaiveModel().to(device)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    training_model(model, optimizer, mnist_training_step, None, None, 1)
    evaluating_model(model)

    optimizer = trace(SGD)(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    evaluator = TorchEvaluator(training_model, optimizer, mnist_training_step)
    quantizer = QATQuantizer(model, QUANT_CONFIG, evaluator, len(train_dataloader))
    real_input = next(iter(train_dataloader))[0].to(device)
    quantizer.track_forward(real_input)
    _, calibration_config = quantizer.compress(None, max_epochs=2)
    evaluating_model(model)

    assert {m: sorted(t) for m, t in calibration_config.items()} == {
        **{m: ["_input_", "_output_", "weight"] for m in ("conv1", "conv2", "fc1", "fc2")},
        **{m: ["_output_"] for m in ("relu1", "relu2", "relu3")}}
    assert evaluator.step_count == 2 * len(train_dataloader)
    assert output_on_grid(model, "relu2", calibration_config["relu2"]["_output_0"], real_input)


def test_dorefa_example():
    model = NaiveModel().to(device)
    configure_list = [{**QUANT_CONFIG[0], "target_names": ["_input_", "weight"]}, QUANT_CONFIG[1]]
    optimizer = trace(torch.optim.SGD)(model.parameters(), lr=0.001, momentum=0.5)
    evaluator = TorchEvaluator(training_model, optimizer, mnist_training_step)
    quantizer = DoReFaQuantizer(model, configure_list, evaluator)
    model, calibration_config = quantizer.compress(None, 1)
    evaluating_model(model)

    assert sorted(calibration_config["fc1"]) == ["_input_", "weight"]
    assert float(calibration_config["fc1"]["weight"]["scale"]) == pytest.approx(1 / 127)  # DoReFa's fixed grid
    assert output_on_grid(model, "relu1", calibration_config["relu1"]["_output_"], next(iter(test_dataloader))[0])


LSQ_PTQ_CONFIG = [{
    "target_names": ["_input_", "weight"],
    "op_names": ["conv2"],
    "quant_dtype": "int8",
    "quant_scheme": "affine",
    "granularity": "default",
}, {
    "op_names": ["relu1", "relu2"],
    "target_names": ["_output_"],
    "quant_dtype": "int8",
    "quant_scheme": "affine",
    "granularity": "default",
}, {
    "op_names": ["max_pool2"],
    "target_names": ["_output_"],
    "quant_dtype": "int8",
    "quant_scheme": "affine",
    "granularity": "default",
}, {
    "target_names": ["_input_", "weight", "_output_"],
    "op_names": ["conv1"],
    "quant_dtype": "int8",
    "quant_scheme": "affine",
    "granularity": "default",
}]


def test_lsq_example():
    model = NaiveModel(batchnorm=True).to(device)
    configure_list = copy.deepcopy(LSQ_PTQ_CONFIG)
    configure_list[3]["fuse_names"] = [("conv1", "batchnorm1")]
    optimizer = trace(torch.optim.SGD)(model.parameters(), momentum=0.5, lr=1e-2)
    evaluator = TorchEvaluator(training_model, optimizer, mnist_training_step)
    quantizer = LsqQuantizer(model, configure_list, evaluator)
    printed = [f"module_name={module_name}\ttarget_name={target_name}\t"
               for module_name, ts in quantizer._target_spaces.items() for target_name, target_name in ts.items()]
    printed += [f"module_name={module_name}\twrapper={wrapper}\tbias={getattr(wrapper, 'bias', -1)}"
                for module_name, wrapper in quantizer._module_wrappers.items()]
    model, calibration_config = quantizer.compress(None, 1)
    evaluating_model(model)

    assert len(printed) == 8 + 6  # 8 targets; 6 wrappers: batchnorm1 is wrapped as conv1's fused follower
    assert sorted(calibration_config) == ["conv1", "conv2", "max_pool2", "relu1", "relu2"]  # batchnorm1: fused
    x = next(iter(test_dataloader))[0]
    assert output_on_grid(model, "max_pool2", calibration_config["max_pool2"]["_output_"], x)


def test_ptq_example():
    model = NaiveModel(batchnorm=True).to(device)
    optimizer = trace(torch.optim.SGD)(model.parameters(), lr=0.01, momentum=0.5)
    evaluator = TorchEvaluator(training_model, optimizer, mnist_training_step, evaluating_func=evaluating_model)
    quantizer = PtqQuantizer(model, LSQ_PTQ_CONFIG, evaluator)
    before = copy.deepcopy(model.state_dict())
    model, calibration_config = quantizer.compress(None, 1)
    evaluating_model(model)

    assert sorted(calibration_config) == ["conv1", "conv2", "max_pool2", "relu1", "relu2"]
    # a deliberate difference (README): our PTQ observes the training batches and updates nothing
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)
    assert output_on_grid(model, "conv1", calibration_config["conv1"]["_output_"], next(iter(test_dataloader))[0])


class VGG_Cifar10(nn.Module):  # noqa: N801 - bnn_example's name
    def __init__(self, num_classes: int = 1000):
        super().__init__()

        def block(cin, cout, pool):
            return [nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False), *([nn.MaxPool2d(2, 2)] if pool else []),
                    nn.BatchNorm2d(cout, eps=1e-4, momentum=0.1), nn.Hardtanh(inplace=True)]
        self.features = nn.Sequential(*block(3, 128, False), *block(128, 128, True), *block(128, 256, False),
                                      *block(256, 256, True), *block(256, 512, False), *block(512, 512, True))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 4 * 4, 1024, bias=False), nn.BatchNorm1d(1024), nn.Hardtanh(inplace=True),
            nn.Linear(1024, 1024, bias=False), nn.BatchNorm1d(1024), nn.Hardtanh(inplace=True),
            nn.Linear(1024, num_classes), nn.BatchNorm1d(num_classes, affine=False))

    def forward(self, x):
        return self.classifier(self.features(x).view(-1, 512 * 4 * 4))


def test_bnn_example():
    train_loader = random_loader(CIFAR)

    def train_bnn(model, optimizer, training_step, scheduler=None, max_steps=None, max_epochs=400):
        max_epochs = max_epochs or (40 if max_steps is None else 400)
        for _ in range(max_epochs):
            model.train()
            for batch in train_loader:
                optimizer.zero_grad()
                loss = training_step(batch, model)
                loss.backward()
                optimizer.step()
                if isinstance(scheduler, SCHEDULER):
                    scheduler.step()
            evaluate(model, train_loader)

    torch.manual_seed(0)
    model = VGG_Cifar10(num_classes=10).to(device)
    configure_list = [{
        "op_names": ["features.3", "features.7", "features.10", "features.14", "classifier.0", "classifier.3"],
        "target_names": ["weight"],
        "quant_dtype": None,
        "quant_scheme": "affine",
        "granularity": "default",
    }, {
        "op_names": ["features.6", "features.9", "features.13", "features.16", "features.20", "classifier.2",
                     "classifier.5"],
        "quant_dtype": None,
        "target_names": ["_output_"],
        "quant_scheme": "affine",
        "granularity": "default",
    }]
    optimizer = trace(torch.optim.Adam)(model.parameters(), lr=1e-2)
    evaluator = TorchEvaluator(train_bnn, optimizer, training_step)
    quantizer = BNNQuantizer(model, configure_list, evaluator)
    model, calibration_config = quantizer.compress(None, 1)
    evaluate(model, train_loader)

    assert len(calibration_config) == 13 and calibration_config["features.3"]["weight"]["quant_bits"] == 1
    seen = []
    model.features[6].register_forward_hook(lambda m, i, out: seen.append(out))
    model.eval()(next(iter(train_loader))[0])
    assert sorted(seen[0].unique().tolist()) == [-1.0, 1.0]  # binary activations


# --- evaluator/*.py -----------------------------------------------------------------------------------
def test_torch_evaluator_example(torchvision):
    def training_func(model, optimizer, training_step, lr_scheduler, max_steps, max_epochs):
        train_dataloader, test_dataloader = prepare_dataloader()
        assert max_steps is not None or max_epochs is not None
        total_steps = max_steps if max_steps else max_epochs * len(train_dataloader)
        total_epochs = total_steps // len(train_dataloader) + (0 if total_steps % len(train_dataloader) == 0 else 1)
        current_step = 0
        for _ in range(total_epochs):
            for batch in train_dataloader:
                loss = training_step(batch, model)
                loss.backward()
                optimizer.step()
                current_step = current_step + 1
                if current_step >= total_steps:
                    return
            lr_scheduler.step()

    model = Models(torchvision).build_resnet18()
    optimizer = trace(torch.optim.Adam)(model.parameters(), lr=0.001)
    lr_scheduler = trace(torch.optim.lr_scheduler.LambdaLR)(optimizer, lr_lambda=lambda epoch: 1 / (epoch + 1))

    def training_step(batch, model, *args, **kwargs):
        return F.cross_entropy(model(batch[0]), batch[1])

    evaluator = TorchEvaluator(training_func, optimizer, training_step, lr_scheduler)

    # what a compressor does with it: the user's loop runs, its scheduler steps once per epoch
    _, masks = TaylorPruner(model, [{"op_names": ["fc"], "sparse_ratio": 0.5}], evaluator, training_steps=2).compress()
    assert evaluator.step_count == 2 and lr_scheduler.last_epoch == 1
    assert zero_rows(masks["fc"]["weight"]) == 0.5


def test_lightning_evaluator_example(torchvision, tmp_path):
    pl = pytest.importorskip("lightning.pytorch", reason="pip install 'hubcompress[lightning]'")
    accuracy = pytest.importorskip("torchmetrics.functional", reason="pip install torchmetrics").accuracy
    from hubcompress.compression import LightningEvaluator

    models = Models(torchvision)

    class MyModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = models.build_resnet18()
            self.criterion = torch.nn.CrossEntropyLoss()

        def forward(self, x):  # missing in NNI's example: the user's module has one
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.criterion(self(x), y)
            self.log("train_loss", loss)
            return loss

        def evaluate(self, batch, stage=None):
            x, y = batch
            logits = self(x)
            loss = self.criterion(logits, y)
            acc = accuracy(torch.argmax(logits, dim=1), y, "multiclass", num_classes=10)
            if stage:
                self.log("default", loss, prog_bar=False)
                self.log(f"{stage}_loss", loss, prog_bar=True)
                self.log(f"{stage}_acc", acc, prog_bar=True)

        def validation_step(self, batch, batch_idx):
            self.evaluate(batch, "val")

        def configure_optimizers(self):
            optimizer = trace(torch.optim.Adam)(self.parameters(), lr=0.001)
            scheduler_dict = {
                "scheduler": trace(torch.optim.lr_scheduler.LambdaLR)(optimizer,
                                                                      lr_lambda=lambda epoch: 1 / (epoch + 1)),
                "interval": "epoch",
            }
            return {"optimizer": optimizer, "lr_scheduler": scheduler_dict}

    class MyDataModule(pl.LightningDataModule):  # the user's own data module (NNI's example: ``pass``)
        def __init__(self, data_dir: str):
            super().__init__()
            self.data_dir = data_dir

        def train_dataloader(self):
            return prepare_dataloader()[0]

        def val_dataloader(self):
            return prepare_dataloader()[1]

    pl_trainer = trace(pl.Trainer)(accelerator="cpu", devices=1, max_epochs=3, enable_progress_bar=False,
                                   enable_model_summary=False, enable_checkpointing=False,
                                   logger=pl.loggers.CSVLogger(tmp_path, name="vgg"))  # NNI: TensorBoardLogger
    pl_data = trace(MyDataModule)(data_dir=str(tmp_path))
    evaluator = LightningEvaluator(pl_trainer, pl_data)

    module = MyModule()
    _, masks = TaylorPruner(module, [{"op_names": ["model.fc"], "sparse_ratio": 0.5}], evaluator,
                            training_steps=1).compress()
    assert zero_rows(masks["model.fc"]["weight"]) == 0.5
