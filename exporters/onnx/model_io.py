"""How a model is called for export: named inputs in, a tuple of named output tensors out.

Shared by the exporter (which traces this calling convention) and the validator (which computes
PyTorch references through exactly the same code path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from exporters.errors import OnnxExportFailed
from exporters.onnx.registry import AxisMap


class NamedOutputsModule(nn.Module):
    """Positional tensors in, a tuple of the named outputs out: the calling convention both exporters need.

    Models return ``ModelOutput`` objects, dicts, tensors or tuples; picking the outputs by name
    here gives the graph exactly the outputs the config promises, in its order.
    """

    def __init__(
        self,
        model: nn.Module,
        input_names: Sequence[str],
        output_names: Sequence[str],
        forward_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.forward_kwargs = dict(forward_kwargs or {})

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.input_names, tensors, strict=True)), **self.forward_kwargs)
        return select_outputs(outputs, self.output_names)


def select_outputs(outputs: Any, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """Pick ``names`` from a model's return value: by key from a mapping, by position from a tuple."""
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    if isinstance(outputs, Mapping):
        missing = [name for name in names if outputs.get(name) is None]
        if missing:
            available = [key for key, value in outputs.items() if isinstance(value, torch.Tensor)]
            raise OnnxExportFailed(f"the model returns no output named {missing}; it returns {available}")
        return tuple(outputs[name] for name in names)
    if isinstance(outputs, (tuple, list)) and len(outputs) >= len(names):
        return tuple(outputs[: len(names)])
    raise OnnxExportFailed(f"cannot pick outputs {list(names)} from a {type(outputs).__name__}; pass an export config")


def infer_output_axes(outputs: Any, sequence_length: int | None) -> dict[str, AxisMap]:
    """Output names and dynamic axes for a model exported without a config.

    Axis 0 is the batch; axis 1 is taken as the sequence when its size equals the inputs'
    sequence length. Pass a config when this guess is wrong for your model.
    """
    if isinstance(outputs, torch.Tensor):
        named = {"output": outputs}
    elif isinstance(outputs, Mapping):
        named = {key: value for key, value in outputs.items() if isinstance(value, torch.Tensor)}
    elif isinstance(outputs, (tuple, list)) and all(isinstance(value, torch.Tensor) for value in outputs):
        named = {f"output_{index}": value for index, value in enumerate(outputs)}
    else:
        raise OnnxExportFailed(
            f"cannot name the outputs of a model returning {type(outputs).__name__}; pass an export config"
        )
    axes: dict[str, AxisMap] = {}
    for name, tensor in named.items():
        axes[name] = {0: "batch"} if tensor.ndim >= 1 else {}
        if tensor.ndim >= 2 and sequence_length is not None and tensor.shape[1] == sequence_length:
            axes[name][1] = "sequence"
    return axes


@contextlib.contextmanager
def eval_no_grad(model: nn.Module) -> Iterator[None]:
    """Export in eval mode (dropout off) and give the caller's model back in the mode it had."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def as_model_tensors(model: nn.Module, inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Arrays or tensors by name, as tensors on the model's device (CPU for a model without weights)."""
    first_weight = next(iter(model.parameters()), None)
    device = first_weight.device if first_weight is not None else torch.device("cpu")
    return {name: torch.as_tensor(value).to(device) for name, value in inputs.items()}
