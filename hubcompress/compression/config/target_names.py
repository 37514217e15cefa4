"""Target names: parameters and buffers by name, ``_input_*`` and ``_output_*`` for activations."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from enum import Enum

from torch import nn

_INPUT = re.compile(r"^_input_(.*)$")
_OUTPUT = re.compile(r"^_output_(.*)$")


class TargetType(str, Enum):
    PARAMETER = "parameter"
    BUFFER = "buffer"
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class TargetRef:
    """Where a target lives: a tensor attribute, or a position / name / key of inputs or outputs."""

    name: str
    type: TargetType
    position: int | None = None  # _input_{i}, _output_{i}
    key: str | None = None  # _input_{argname}, _output_{key}

    @property
    def is_activation(self) -> bool:
        return self.type in (TargetType.INPUT, TargetType.OUTPUT)


def forward_arg_names(module: nn.Module) -> list[str]:
    """Positional-or-keyword argument names of the module class's forward, self excluded."""
    sig = inspect.signature(type(module).forward)
    return [p.name for p in list(sig.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def parse_target(module: nn.Module, name: str) -> TargetRef | str:
    """A TargetRef, or a string saying why ``name`` is not a target of ``module``.

    Example:
        >>> from torch import nn
        >>> parse_target(nn.Linear(2, 2), "_input_input").position
        0
        >>> parse_target(nn.Linear(2, 2, bias=False), "bias")
        "Linear has no parameter or buffer 'bias' (it is None)"
    """
    for regex, ttype in ((_INPUT, TargetType.INPUT), (_OUTPUT, TargetType.OUTPUT)):
        m = regex.match(name)
        if not m:
            continue
        suffix = m.group(1)
        if suffix == "":
            return TargetRef(name, ttype, position=0)
        if suffix.isdigit():
            return TargetRef(name, ttype, position=int(suffix))
        if ttype is TargetType.INPUT:
            args = forward_arg_names(module)
            if suffix not in args:
                return f"{type(module).__name__}.forward has no argument {suffix!r} (arguments: {args})"
            return TargetRef(name, ttype, position=args.index(suffix), key=suffix)
        return TargetRef(name, ttype, key=suffix)
    if name in module._parameters:
        if module._parameters[name] is None:
            return f"{type(module).__name__} has no parameter or buffer {name!r} (it is None)"
        return TargetRef(name, TargetType.PARAMETER)
    if name in module._buffers:
        if module._buffers[name] is None:
            return f"{type(module).__name__} has no parameter or buffer {name!r} (it is None)"
        return TargetRef(name, TargetType.BUFFER)
    own = list(module._parameters) + list(module._buffers)
    return (f"{type(module).__name__} has no parameter or buffer {name!r} (it has {own}); activations are "
            "named _input_, _input_{i}, _input_{argname}, _output_, _output_{i}, _output_{key}")
