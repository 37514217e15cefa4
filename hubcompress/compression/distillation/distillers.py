"""Layerwise distillers with NNI 3.0's names: the student's targets learn the teacher's.

Loss = ``origin_loss_lambda * task loss + Σ lambda * D(student target, teacher target)``, with
``D`` the target's ``apply_method`` (``mse``; ``kl`` on softened distributions at
``temperature``). Without a ``teacher_model`` the teacher is a frozen copy of the model taken
when the distiller is built, with any compression wrappers stripped: the original model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ...errors import CompressionError, ConfigListError
from ..compressor import Compressor
from ..config.keys import closest
from ..config.target_names import TargetRef, parse_target
from ..evaluator.base import Evaluator
from ..wrapper import ModuleWrapper
from .losses import DISTILL_LOSSES
from .target_space import (
    DistillationTargetSpace,
    default_teacher_predict,
    frozen_copy,
    select_input,
    select_output,
)

logger = logging.getLogger(__name__)

TeacherPredict = Callable[[Any, nn.Module], Any]
# (student module name, target name) -> the teacher module an "auto" link reads.
AutoLink = Callable[[str, str], str]
DISTILLERS: dict[str, type[Distiller]] = {}


def register_distiller(name: str) -> Callable[[type[Distiller]], type[Distiller]]:
    def deco(cls: type[Distiller]) -> type[Distiller]:
        DISTILLERS[name] = cls
        return cls
    return deco


@dataclass
class _Link:
    space: DistillationTargetSpace
    teachers: list[tuple[str, TargetRef]]  # (teacher module name, target)
    adapter: nn.Module | None = None
    values: dict[str, torch.Tensor] = field(default_factory=dict)  # teacher module name -> recorded value


class Distiller(Compressor):
    """Shared machinery: the teacher, its hooks, the loss patch. ``compress()`` returns
    ``(model, {module: {target: last distillation loss}})``."""

    kind = "distillation"
    target_space_cls = DistillationTargetSpace
    needs_training = True
    single_link: bool = False
    _target_spaces: dict[str, dict[str, DistillationTargetSpace]]

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator,
                 teacher_model: nn.Module | None = None, teacher_predict: TeacherPredict | None = None,
                 origin_loss_lambda: float = 1.0, *, auto_link: AutoLink | None = None,
                 existing_wrappers: dict[str, ModuleWrapper] | None = None):
        # ``auto_link`` (not in NNI): where a target without a ``link`` finds its teacher module when the
        # student's module names no longer match the teacher's (a student that lost layers); NNI's
        # rule, the same name, by default.
        self.auto_link = auto_link or (lambda module_name, target_name: module_name)
        # The copy is taken before this distiller wraps anything, and without earlier wrappers.
        self.teacher_model = frozen_copy(model) if teacher_model is None else teacher_model
        self._own_teacher = teacher_model is None
        super().__init__(model, config_list, evaluator, existing_wrappers)
        self.teacher_predict = teacher_predict or default_teacher_predict
        self.origin_loss_lambda = float(origin_loss_lambda)
        self.loss_history: list[float] = []
        self._last: dict[tuple[str, str], float] = {}
        self._hooks: list[Any] = []
        self._handles: list[Any] = []
        with self._withdrawn_on_error():
            self._links = [self._resolve(space) for spaces in self._target_spaces.values() for space in spaces.values()]

    @classmethod
    def from_compressor(cls, compressor: Compressor, new_config_list: list[dict[str, Any]],
                        teacher_model: nn.Module | None = None, teacher_predict: TeacherPredict | None = None,
                        origin_loss_lambda: float = 1.0, evaluator: Evaluator | None = None, *,
                        auto_link: AutoLink | None = None) -> Distiller:
        """NNI's call form: ``DynamicLayerwiseDistiller.from_compressor(previous, config_list,
        teacher_model, teacher_predict, origin_loss_lambda)``; without a teacher, a frozen copy
        of the model as it is now (wrappers stripped) teaches."""
        return cls._chain(compressor, new_config_list, evaluator, teacher_model=teacher_model,
                          teacher_predict=teacher_predict, origin_loss_lambda=origin_loss_lambda,
                          auto_link=auto_link)

    def _resolve(self, space: DistillationTargetSpace) -> _Link:
        teacher_modules = dict(self.teacher_model.named_modules())
        names = [self.auto_link(space.wrapper.module_name, space.name)] if space.link == "auto" else (
            [space.link] if isinstance(space.link, str) else list(space.link))
        if self.single_link and len(names) != 1:
            raise ConfigListError(f"{type(self).__name__} links each student target to one teacher module; "
                                  f"{space.wrapper.module_name}.{space.name} has {names}.",
                                  index=space.config_index, key="link")
        teachers = []
        for name in names:
            if name not in teacher_modules or not name:
                known = [n for n in teacher_modules if n]
                near = closest(name, known)
                more = "..." if len(known) > 8 else ""
                hint = f"Closest: {near}." if near else f"Teacher modules: {known[:8]}{more}."
                raise ConfigListError(f"{space.wrapper.module_name}.{space.name} links to teacher module {name!r}, "
                                      f"which the teacher does not have. {hint}", index=space.config_index, key="link")
            ref = parse_target(teacher_modules[name], space.name)
            if isinstance(ref, str):
                raise ConfigListError(f"teacher module {name!r}: {ref}.", index=space.config_index, key="link")
            teachers.append((name, ref))
        return _Link(space, teachers)

    # --- teacher hooks --------------------------------------------------------------------
    def _hook(self, link: _Link, name: str, ref: TargetRef) -> Any:
        module = self.teacher_model.get_submodule(name)
        where = f"{name}.{ref.name}"
        if ref.type.value == "output":
            def on_output(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                link.values[name] = select_output(output, ref, where).detach()
            return module.register_forward_hook(on_output, with_kwargs=True)

        def on_input(mod: nn.Module, args: tuple, kwargs: dict) -> None:
            link.values[name] = select_input(mod, args, kwargs, ref, where).detach()
        return module.register_forward_pre_hook(on_input, with_kwargs=True)

    def _attach(self) -> None:
        if not self._hooks:
            self._hooks = [self._hook(link, name, ref) for link in self._links for name, ref in link.teachers]

    def unwrap_teacher_model(self) -> None:
        """Remove the hooks this distiller put on the teacher (NNI's name)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # --- the run --------------------------------------------------------------------------
    def _start(self) -> None:
        self._attach()
        self.teacher_model.eval()
        for link in self._links:
            link.space.recording = True
        adapters = [p for link in self._links if link.adapter is not None for p in link.adapter.parameters()]
        if adapters:
            self._handles.append(self.evaluator.add_trainable(adapters))
        self._handles.append(self.evaluator.patch_loss(self._patch_loss))

    def _finish(self) -> None:
        for link in self._links:
            link.space.recording, link.space.value = False, None
            link.values.clear()
        for h in self._handles:
            h.remove()
        self._handles = []
        self.unwrap_teacher_model()

    def _patch_loss(self, loss: Any, batch: Any) -> Any:
        missing = [f"{link.space.wrapper.module_name}.{link.space.name}" for link in self._links
                   if link.space.value is None]
        if missing:
            raise CompressionError(f"{type(self).__name__}: the student's forward did not reach {missing[:3]}; "
                                   "distill targets that the training step computes.")
        with torch.no_grad():
            self.teacher_predict(batch, self.teacher_model)
        total = 0.0
        for link in self._links:
            value = link.space.lambda_ * self._link_loss(link)
            self._last[(link.space.wrapper.module_name, link.space.name)] = float(value.detach())
            total = total + value
            link.space.value = None
            link.values.clear()
        self.loss_history.append(float(total.detach()) if isinstance(total, torch.Tensor) else total)
        return self.origin_loss_lambda * loss + total

    def _distance(self, link: _Link, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if link.adapter is not None:
            student = link.adapter(student)
        if student.shape != teacher.shape:
            raise CompressionError(
                f"{link.space.wrapper.module_name}.{link.space.name} has shape {tuple(student.shape)} and its teacher "
                f"target {tuple(teacher.shape)}; use Adaptive1dLayerwiseDistiller (a learned Linear maps the last "
                "dim) or link layers of the same shape.")
        return DISTILL_LOSSES[link.space.apply_method](student, teacher.to(student.dtype), link.space.temperature)

    def _link_loss(self, link: _Link) -> torch.Tensor:
        raise NotImplementedError

    def _result(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (module_name, target), value in self._last.items():
            out.setdefault(module_name, {})[target] = value
        return out

    def track_forward(self, *args: Any, **kwargs: Any) -> Any:
        """One forward of student and teacher without gradients, so every target knows its shape."""
        self._attach()
        with torch.no_grad():
            self.teacher_model(*args, **kwargs)
            return super().track_forward(*args, **kwargs)


@register_distiller("dynamic_layerwise")
class DynamicLayerwiseDistiller(Distiller):
    """Each student target may link several teacher modules; its loss is the smallest distance
    to any of them (so a pruned student chooses which teacher layer each layer learns).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from hubcompress.compression import DynamicLayerwiseDistiller, TorchEvaluator
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        ...     for _ in range(max_steps):
        ...         loss = training_step((torch.randn(16, 4), torch.randint(0, 2, (16,))), model)
        ...         optimizers.zero_grad(); loss.backward(); optimizers.step()
        >>> step = lambda batch, model: nn.functional.cross_entropy(model(batch[0]), batch[1])
        >>> evaluator = TorchEvaluator(training_func, torch.optim.SGD(model.parameters(), lr=0.1), step)
        >>> config = [{"op_names": ["0"], "link": ["0", "2"]}, {"op_names": ["2"], "apply_method": "kl"}]
        >>> distiller = DynamicLayerwiseDistiller(model, config, evaluator, origin_loss_lambda=0.5)
        >>> _, losses = distiller.compress(max_steps=2)
        >>> sorted(losses), len(distiller.loss_history)
        (['0', '2'], 2)
    """

    def _link_loss(self, link: _Link) -> torch.Tensor:
        student = link.space.value
        candidates = []
        for name, _ in link.teachers:
            teacher = link.values.get(name)
            if teacher is None:
                raise CompressionError(f"teacher module {name!r} did not run in teacher_predict(batch, teacher).")
            if len(link.teachers) > 1 and teacher.shape != student.shape:
                continue  # a link of another shape cannot be the best one
            candidates.append(self._distance(link, student, teacher))
        if not candidates:
            raise CompressionError(f"{link.space.wrapper.module_name}.{link.space.name}: no linked teacher target "
                                   f"has its shape {tuple(student.shape)}.")
        return torch.stack(candidates).min()


@register_distiller("adaptive1d_layerwise")
class Adaptive1dLayerwiseDistiller(Distiller):
    """One teacher module per student target; when their last dims differ, a learned
    ``nn.Linear(student_dim, teacher_dim)`` maps the student's before the distance (trained with
    the model, dropped with the wrappers). Widths come from ``track_forward(example_input)``,
    or from the modules (``out_features``, ``embedding_dim``, ...).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from hubcompress.compression import Adaptive1dLayerwiseDistiller, TorchEvaluator
        >>> teacher = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> student = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        ...     for _ in range(max_steps):
        ...         loss = training_step((torch.randn(8, 4), None), model)
        ...         optimizers.zero_grad(); loss.backward(); optimizers.step()
        >>> evaluator = TorchEvaluator(training_func, torch.optim.Adam(student.parameters(), lr=0.01),
        ...                            lambda batch, model: model(batch[0]).sum() * 0)
        >>> distiller = Adaptive1dLayerwiseDistiller(student, [{"op_names": ["0"]}], evaluator,
        ...                                          teacher_model=teacher, origin_loss_lambda=0.0)
        >>> _ = distiller.track_forward(torch.randn(2, 4))  # learn the widths: 8 vs 16
        >>> _ = distiller.compress(max_steps=2)
        >>> student[0]._hc_wrapper._output__adapter
        Linear(in_features=8, out_features=16, bias=True)
    """

    single_link = True

    def _start(self) -> None:
        for link in self._links:
            if link.adapter is None:
                self._make_adapter(link)
        super()._start()

    def _make_adapter(self, link: _Link) -> None:
        name, ref = link.teachers[0]
        student_dim = _width(link.space.last_shape, link.space.wrapper.module, link.space.ref)
        teacher_dim = _width(self._teacher_shapes.get((name, ref.name)), self.teacher_model.get_submodule(name), ref)
        if student_dim is None or teacher_dim is None:
            if self._own_teacher:
                return  # the teacher is a copy of the student: the same widths
            raise CompressionError(
                f"Adaptive1dLayerwiseDistiller: the width of {link.space.wrapper.module_name}.{link.space.name} or "
                f"of teacher {name}.{ref.name} is unknown; call distiller.track_forward(example_input) before "
                "compress().")
        if student_dim != teacher_dim:
            device = next(link.space.wrapper.module.parameters(), torch.zeros(())).device
            link.adapter = nn.Linear(student_dim, teacher_dim).to(device)
            link.space.wrapper.add_module(f"{link.space.name}_adapter", link.adapter)

    @property
    def _teacher_shapes(self) -> dict[tuple[str, str], tuple[int, ...]]:
        return getattr(self, "_seen_teacher_shapes", {})

    def track_forward(self, *args: Any, **kwargs: Any) -> Any:
        out = super().track_forward(*args, **kwargs)
        self._seen_teacher_shapes = {(name, ref.name): tuple(link.values[name].shape)
                                     for link in self._links for name, ref in link.teachers if name in link.values}
        for link in self._links:
            link.values.clear()
        return out

    def _link_loss(self, link: _Link) -> torch.Tensor:
        name = link.teachers[0][0]
        if name not in link.values:
            raise CompressionError(f"teacher module {name!r} did not run in teacher_predict(batch, teacher).")
        return self._distance(link, link.space.value, link.values[name])


_WIDTH_ATTRS = ("out_features", "embedding_dim", "num_features", "out_channels")


def _width(shape: tuple[int, ...] | None, module: nn.Module, ref: TargetRef) -> int | None:
    if shape:
        return shape[-1]
    if ref.type.value == "output" and ref.position == 0:
        for attr in _WIDTH_ATTRS:
            if isinstance(getattr(module, attr, None), int):
                return getattr(module, attr)
        normalized = getattr(module, "normalized_shape", None)
        if normalized:
            return int(normalized[-1])
    return None
