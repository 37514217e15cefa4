"""The export-config registry: what to export for each architecture, keyed by ``model_type`` and task.

An export config says which inputs a model takes, which outputs to keep, which axes are
dynamic, how to build dummy inputs from the model's config, and the absolute tolerance a
correct export meets. Architectures are added with a decorator, never with ``if`` chains.

Example:
    >>> import numpy as np
    >>> from exporters.onnx import OnnxConfig, register_export_config, get_export_config
    >>> @register_export_config("my-encoder")
    ... class MyEncoderOnnxConfig(OnnxConfig):
    ...     SUPPORTED_TASKS = {"feature-extraction": {"hidden": {0: "batch", 1: "sequence"}}}
    ...     @property
    ...     def inputs(self):
    ...         return {"input_ids": {0: "batch", 1: "sequence"}}
    ...     def generate_dummy_inputs(self, batch_size=2, sequence_length=8, *, padded=False, seed=0):
    ...         ids = np.random.default_rng(seed).integers(0, 10, (batch_size, sequence_length))
    ...         return {"input_ids": ids}
    >>> get_export_config("my-encoder").output_names
    ['hidden']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np

from exporters.errors import UnsupportedModelType

logger = logging.getLogger(__name__)

# Axis maps: {axis index: symbolic name}; the same name on two tensors means the same size.
AxisMap = dict[int, str]

_REGISTRY: dict[tuple[str, str], type[OnnxConfig]] = {}

ConfigClass = TypeVar("ConfigClass", bound="type[OnnxConfig]")


class OnnxConfig:
    """Base class of the per-architecture export configs.

    Subclasses declare ``SUPPORTED_TASKS`` ({task: {output name: dynamic axes}}), implement
    :attr:`inputs` and :meth:`generate_dummy_inputs`, and may set ``DEFAULT_ATOL`` and
    ``FORWARD_KWARGS`` (constant keyword arguments that put the model in an exportable mode,
    e.g. ``use_cache=False``).

    Args:
        model_config: the model's config object (a ``transformers.PretrainedConfig`` or anything
            with the same attributes); dummy inputs read sizes such as ``vocab_size`` from it.
        task: one of ``SUPPORTED_TASKS``.
        model_type: the ``model_type`` this config was looked up for (informational).
        atol: absolute tolerance for validation; defaults to ``DEFAULT_ATOL``.
    """

    SUPPORTED_TASKS: ClassVar[dict[str, dict[str, AxisMap]]] = {}
    DEFAULT_ATOL: ClassVar[float] = 1e-4
    FORWARD_KWARGS: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model_config: Any = None,
        task: str = "feature-extraction",
        *,
        model_type: str | None = None,
        atol: float | None = None,
    ) -> None:
        self.model_type = model_type or getattr(model_config, "model_type", None) or type(self).__name__
        if task not in self.SUPPORTED_TASKS:
            raise UnsupportedModelType(self.model_type, task, sorted(self.SUPPORTED_TASKS))
        self.model_config = model_config
        self.task = task
        self.atol = self.DEFAULT_ATOL if atol is None else float(atol)

    @property
    def inputs(self) -> dict[str, AxisMap]:
        """Input names, in the order the exported graph takes them, with their dynamic axes."""
        raise NotImplementedError

    @property
    def outputs(self) -> dict[str, AxisMap]:
        """Output names kept for this task, in graph order, with their dynamic axes."""
        # Copies: the class-level declarations are shared by every instance.
        return {name: dict(axes) for name, axes in self.SUPPORTED_TASKS[self.task].items()}

    @property
    def input_names(self) -> list[str]:
        return list(self.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    @property
    def dynamic_axes(self) -> dict[str, AxisMap]:
        """Dynamic axes of inputs and outputs together, as ``torch.onnx.export`` takes them."""
        return {**self.inputs, **self.outputs}

    def generate_dummy_inputs(
        self, batch_size: int = 2, sequence_length: int = 8, *, padded: bool = False, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """Random inputs of the given size; ``padded`` zeroes the attention mask at the end of some rows."""
        raise NotImplementedError

    def config_value(self, name: str, default: Any) -> Any:
        """An attribute of the model config, or ``default`` when there is no config or no such attribute."""
        value = getattr(self.model_config, name, None)
        return default if value is None else value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_type={self.model_type!r}, task={self.task!r}, atol={self.atol:g})"


def register_export_config(
    *model_types: str, tasks: tuple[str, ...] | None = None
) -> Callable[[ConfigClass], ConfigClass]:
    """Class decorator that registers an :class:`OnnxConfig` subclass for one or more ``model_type`` values.

    Every task in the class's ``SUPPORTED_TASKS`` is registered unless ``tasks`` narrows them.

    Example:
        >>> from exporters.onnx import register_export_config, registered_export_configs
        >>> from exporters.onnx.model_configs import BertOnnxConfig
        >>> _ = register_export_config("my-bert-clone")(BertOnnxConfig)
        >>> ("my-bert-clone", "text-classification") in registered_export_configs()
        True
    """
    if not model_types:
        raise ValueError("register_export_config needs at least one model_type, e.g. @register_export_config('bert')")

    def decorate(cls: ConfigClass) -> ConfigClass:
        chosen = tasks if tasks is not None else tuple(cls.SUPPORTED_TASKS)
        unknown = [task for task in chosen if task not in cls.SUPPORTED_TASKS]
        if unknown:
            raise ValueError(f"{cls.__name__} does not declare tasks {unknown} in SUPPORTED_TASKS")
        for model_type in model_types:
            for task in chosen:
                previous = _REGISTRY.get((model_type, task))
                # Re-registering the same class is harmless (module reloads); a different one is a clash.
                if previous is not None and previous is not cls:
                    raise ValueError(
                        f"({model_type!r}, {task!r}) is already registered to {previous.__name__}; "
                        f"refusing to replace it with {cls.__name__}"
                    )
                _REGISTRY[(model_type, task)] = cls
        return cls

    return decorate


def registered_export_configs() -> dict[tuple[str, str], type[OnnxConfig]]:
    """A copy of the registry: ``{(model_type, task): config class}``."""
    return dict(_REGISTRY)


def get_export_config(
    model_type: str,
    task: str = "feature-extraction",
    model_config: Any = None,
    *,
    atol: float | None = None,
) -> OnnxConfig:
    """The export config registered for ``model_type`` and ``task``, bound to ``model_config``.

    Raises:
        UnsupportedModelType: nothing is registered for the pair; the message lists what is.

    Example:
        >>> from exporters.onnx import get_export_config
        >>> cfg = get_export_config("bert", "text-classification")
        >>> cfg.input_names, cfg.output_names
        (['input_ids', 'attention_mask', 'token_type_ids'], ['logits'])
    """
    cls = _REGISTRY.get((model_type, task))
    if cls is None:
        types = sorted({registered_type for registered_type, _ in _REGISTRY})
        if model_type in types:
            tasks = sorted(t for registered_type, t in _REGISTRY if registered_type == model_type)
            raise UnsupportedModelType(model_type, task, tasks)
        raise UnsupportedModelType(model_type, None, types)
    return cls(model_config, task, model_type=model_type, atol=atol)


def export_config_for_model(model: Any, task: str = "feature-extraction", *, atol: float | None = None) -> OnnxConfig:
    """The export config for a transformers model, read from ``model.config.model_type``.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> from exporters.onnx import export_config_for_model
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                              intermediate_size=37, vocab_size=100))
        >>> export_config_for_model(model).output_names
        ['last_hidden_state', 'pooler_output']
    """
    model_config = getattr(model, "config", None)
    model_type = getattr(model_config, "model_type", None)
    if not model_type:
        raise UnsupportedModelType(
            type(model).__name__, None, sorted({registered_type for registered_type, _ in _REGISTRY})
        )
    return get_export_config(model_type, task, model_config, atol=atol)
