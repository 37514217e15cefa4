"""Distillers: the loss falls and the student moves toward the teacher; several links, a
learned adapter between widths, transformers outputs (tuples, ModelOutput), errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hubcompress.compression import (
    Adaptive1dLayerwiseDistiller,
    DynamicLayerwiseDistiller,
    TorchEvaluator,
    TransformersEvaluator,
)
from hubcompress.errors import ConfigListError

from ..conftest import tiny_bert
from .test_transformers import make_trainer


def mlp(hidden: int = 16, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))


DATA = [torch.randn(32, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]


def loop(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
    for i in range(max_steps):
        optimizers.zero_grad()
        training_step((DATA[i % 4], None), model).backward()
        optimizers.step()


def evaluator_for(model: nn.Module, lr: float = 0.02) -> TorchEvaluator:
    # The task loss is irrelevant here (origin_loss_lambda=0): only distillation moves the student.
    return TorchEvaluator(loop, torch.optim.Adam(model.parameters(), lr=lr), lambda batch, m: m(batch[0]).sum() * 0)


def output_gap(student: nn.Module, teacher: nn.Module) -> float:
    with torch.no_grad():
        x = torch.randn(256, 8, generator=torch.Generator().manual_seed(99))
        return float((student(x) - teacher(x)).pow(2).mean())


@pytest.mark.parametrize("cls", [DynamicLayerwiseDistiller, Adaptive1dLayerwiseDistiller])
def test_each_distiller_loss_falls_and_the_student_moves_toward_the_teacher(cls):
    teacher, student = mlp(seed=0), mlp(seed=1)
    gap = output_gap(student, teacher)
    config = [{"op_names": ["0"]}, {"op_names": ["2"], "apply_method": "kl", "temperature": 4.0, "lambda": 2.0}]
    distiller = cls(student, config, evaluator_for(student), teacher_model=teacher, origin_loss_lambda=0.0)
    _, losses = distiller.compress(max_steps=40)
    history = distiller.loss_history
    assert len(history) == 40 and sum(history[-5:]) < 0.5 * sum(history[:5])
    assert sorted(losses) == ["0", "2"]
    distiller.unwrap_model()
    assert output_gap(student, teacher) < 0.5 * gap


def test_default_teacher_is_a_frozen_copy_of_the_original():
    student = mlp()
    original = copy.deepcopy(student.state_dict())
    distiller = DynamicLayerwiseDistiller(student, [{"op_names": ["2"]}], evaluator_for(student, lr=0.1))
    distiller.compress(max_steps=3)
    teacher = distiller.teacher_model
    assert teacher is not student and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(original[k], v) for k, v in teacher.state_dict().items())
    assert not teacher[2]._forward_hooks  # the hooks are gone after compress


def test_dynamic_links_pick_the_closest_teacher_layer():
    teacher, student = mlp(seed=0), mlp(seed=1)
    with torch.no_grad():  # make the student's layer 0 an exact copy of the teacher's layer 0
        student[0].load_state_dict(teacher[0].state_dict())
    config = [{"op_names": ["0"], "link": ["2", "0"], "target_names": ["_output_"]}]
    distiller = DynamicLayerwiseDistiller(student, config, evaluator_for(student, lr=0.0), teacher_model=teacher,
                                          origin_loss_lambda=0.0)
    _, losses = distiller.compress(max_steps=1)
    assert losses["0"]["_output_"] == pytest.approx(0.0, abs=1e-10)  # layer 2 (other width) is skipped


def test_adaptive1d_learns_a_linear_between_widths():
    teacher, student = mlp(hidden=32, seed=0), mlp(hidden=16, seed=1)
    distiller = Adaptive1dLayerwiseDistiller(student, [{"op_names": ["0"], "link": "0"}], evaluator_for(student),
                                             teacher_model=teacher, origin_loss_lambda=0.0)
    distiller.track_forward(torch.randn(2, 8))
    distiller.compress(max_steps=30)
    adapter = student[0]._hc_wrapper._output__adapter
    assert (adapter.in_features, adapter.out_features) == (16, 32)
    assert distiller.loss_history[-1] < 0.5 * distiller.loss_history[0]
    distiller.unwrap_model()
    assert [n for n, _ in student.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_hidden_states_of_tuples_and_model_outputs_and_logits_through_the_trainer(tmp_path):
    teacher = tiny_bert()
    student = tiny_bert().train()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    config = [{"op_names": ["bert.encoder.layer.0.attention.self"], "target_names": ["_output_"]},  # a tuple
              {"op_names": ["bert.encoder"], "target_names": ["_output_last_hidden_state"]},  # a ModelOutput
              {"op_names": ["classifier"], "apply_method": "kl"}]
    evaluator = TransformersEvaluator(make_trainer(student, tmp_path))
    distiller = DynamicLayerwiseDistiller(student, config, evaluator, teacher_model=teacher, origin_loss_lambda=0.1)
    _, losses = distiller.compress(max_steps=6)
    assert len(distiller.loss_history) == 6
    assert set(losses) == {"bert.encoder.layer.0.attention.self", "bert.encoder", "classifier"}
    assert distiller.loss_history[-1] < distiller.loss_history[0]


@pytest.mark.parametrize("cls,config,key,match", [
    (DynamicLayerwiseDistiller, {"op_names": ["0"], "link": "00"}, "link", "Closest: \\['0'\\]"),
    (DynamicLayerwiseDistiller, {"op_names": ["0"], "target_names": ["weight"]}, "target_names", "activations"),
    (DynamicLayerwiseDistiller, {"op_names": ["0"], "temperature": -1}, "temperature", "positive"),
    (DynamicLayerwiseDistiller, {"op_names": ["0"], "apply_method": "cosin"}, "apply_method", "mse"),
    (Adaptive1dLayerwiseDistiller, {"op_names": ["0"], "link": ["0", "2"]}, "link", "one teacher module"),
])
def test_config_errors(cls, config, key, match):
    student = mlp()
    with pytest.raises(ConfigListError, match=match) as info:
        cls(student, [config], evaluator_for(student))
    assert info.value.index == 0 and info.value.key == key
    assert not any("_hc_wrapper" in n for n, _ in student.named_modules())  # left as it was


def test_embedding_losses_values_and_gradients():
    from hubcompress.compression.distillation import DISTILL_LOSSES

    cosine, relational = DISTILL_LOSSES["cosine"], DISTILL_LOSSES["relational"]
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # cosine: 1 - cos per row, the mean; orthogonal rows give 1, the same directions 0.
    assert float(cosine(teacher[[1, 0, 2]], teacher, 1.0)) == pytest.approx(2 / 3)
    assert float(cosine(2 * teacher, teacher, 1.0)) == pytest.approx(0.0, abs=1e-6)
    # relational: the MSE of the off-diagonal similarities; the student's width need not be the teacher's.
    assert float(relational(teacher, teacher, 1.0)) == 0.0
    wide = torch.cat([teacher, torch.zeros(3, 5)], dim=1)
    assert float(relational(wide, teacher, 1.0)) == pytest.approx(0.0, abs=1e-7)
    student = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = relational(student, teacher, 1.0)
    assert float(loss.detach()) > 0
    loss.backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    one = torch.ones(1, 2, requires_grad=True)
    relational(one, teacher[:1], 1.0).backward()  # no pair: zero, and no error
    with pytest.raises(ValueError, match="3 rows"):
        relational(teacher, teacher[:2], 1.0)


def test_embedding_losses_are_distillation_apply_methods():
    # The NNI config-list key names them, on any target whose output is one embedding per row.
    student, teacher = mlp(hidden=16, seed=1), mlp(hidden=16, seed=2)
    config = [{"op_names": ["2"], "target_names": ["_output_"], "apply_method": "relational"},
              {"op_names": ["0"], "target_names": ["_output_"], "apply_method": "cosine", "lambda": 0.5}]
    distiller = DynamicLayerwiseDistiller(student, config[:1], evaluator_for(student), teacher_model=teacher,
                                          origin_loss_lambda=0.0)
    distiller.compress(max_steps=40)
    assert distiller.loss_history[-1] < distiller.loss_history[0]
    both = DynamicLayerwiseDistiller(mlp(hidden=16, seed=1), config, evaluator_for(student), teacher_model=teacher)
    assert {link.space.apply_method for link in both._links} == {"relational", "cosine"}
