"""One shared wrapper per compressed module.

The wrapper leaves the module where it is: it patches the module's ``forward`` on the instance
and hangs itself under the module as ``_hc_wrapper`` (so masks, scales and learned factors move
with ``model.to()`` and reach ``model.parameters()``). Parameters keep their names, so the
user's optimizer keeps working; ``unwrap`` removes both patches and restores the exact module
tree and state-dict keys.

Per target, the compressor kinds act in a fixed order: fake-quantize → mask → record for
distillation (``STAGE_ORDER``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> lin = nn.Linear(3, 2)
    >>> keys = list(lin.state_dict())
    >>> w = ModuleWrapper(lin, "lin"); w.wrap()
    >>> lin(torch.ones(1, 3)).shape
    torch.Size([1, 2])
    >>> w.unwrap(); list(lin.state_dict()) == keys
    True
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import CompressionError
from .config.selection import WRAPPER_ATTR
from .config.target_names import TargetType, forward_arg_names

STAGE_ORDER = ("quantization", "pruning", "distillation")


class TargetSpace:
    """Base of the per-kind view of one target: its setting and how it changes the tensor."""

    def __init__(self, wrapper: ModuleWrapper, config: Any, layout: Any):
        self.wrapper = wrapper
        self.ref = config.ref
        self.setting = config.setting
        self.config_index = config.config_index
        self.layout = layout

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def is_activation(self) -> bool:
        return self.ref.is_activation

    @property
    def target(self) -> torch.Tensor | None:
        """The parameter or buffer itself (None for activations)."""
        if self.ref.type is TargetType.PARAMETER:
            return self.wrapper.module._parameters[self.name]
        if self.ref.type is TargetType.BUFFER:
            return self.wrapper.module._buffers[self.name]
        return None

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ModuleWrapper(nn.Module):
    """Applies every compressor's targets of one module; shared by fused compressors."""

    def __init__(self, module: nn.Module, module_name: str):
        super().__init__()
        # Not registered as a child: the wrapper hangs under the module, and the reverse
        # link would make a cycle in the module tree.
        object.__setattr__(self, "module", module)
        self.module_name = module_name
        self.target_spaces: dict[str, dict[str, TargetSpace]] = {}
        self._arg_names = forward_arg_names(module)
        self._previous_forward: Any = None
        self.wrapped = False
        # Module fusion (quantization's fuse_names): a leader's ``fusion`` transforms its output
        # (folded BN bias, ReLU); a follower whose ``fused_source`` just produced its input passes
        # that input through. References live on the wrappers, so a deepcopy stays consistent.
        self.fusion: Any = None
        self.fused_source: ModuleWrapper | None = None
        self.fused_strict = False  # a fused BatchNorm must only ever see its leader's output
        self.track_output = False
        self._last_output: Any = None

    # --- set-up ---------------------------------------------------------------------------
    def add_target_spaces(self, kind: str, spaces: dict[str, TargetSpace]) -> None:
        if self.target_spaces.get(kind):
            raise CompressionError(
                f"module {self.module_name!r} already has {kind} targets from another compressor; one "
                f"compressor of each kind per module (put all its targets in one config list).")
        self.target_spaces[kind] = spaces

    def wrap(self) -> None:
        if self.wrapped:
            return
        if WRAPPER_ATTR in self.module._modules:
            raise CompressionError(f"module {self.module_name!r} is already wrapped by another compressor; "
                                   "chain compressors with from_compressor instead.")
        self._previous_forward = self.module.__dict__.get("forward")
        self.module.add_module(WRAPPER_ATTR, self)
        self.module.forward = self._wrapped_forward
        self.wrapped = True

    def unwrap(self) -> None:
        if not self.wrapped:
            return
        del self.module._modules[WRAPPER_ATTR]
        if self._previous_forward is not None:
            self.module.forward = self._previous_forward
        else:
            del self.module.forward
        self.wrapped = False

    # --- forward --------------------------------------------------------------------------
    def _spaces_of(self, target_name: str) -> list[TargetSpace]:
        return [self.target_spaces[k][target_name] for k in STAGE_ORDER
                if target_name in self.target_spaces.get(k, {})]

    def apply_target(self, target_name: str, tensor: torch.Tensor) -> torch.Tensor:
        for space in self._spaces_of(target_name):
            tensor = space.apply(tensor)
        return tensor

    def _targets_of(self, *types: TargetType) -> dict[str, Any]:
        refs = {}
        for spaces in self.target_spaces.values():
            for name, space in spaces.items():
                if space.ref.type in types:
                    refs[name] = space.ref
        return refs

    @contextlib.contextmanager
    def _swapped_tensors(self) -> Iterator[None]:
        """Replace each parameter/buffer target by its compressed value for one forward."""
        module = self.module
        saved: list[tuple[dict, str, Any]] = []
        try:
            for name, ref in self._targets_of(TargetType.PARAMETER, TargetType.BUFFER).items():
                store = module._parameters if ref.type is TargetType.PARAMETER else module._buffers
                original = store[name]
                value = self.apply_target(name, original)
                if value is not original:
                    saved.append((store, name, original))
                    store[name] = value
            yield
        finally:
            for store, name, original in reversed(saved):
                store[name] = original

    def _patch_inputs(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        inputs = self._targets_of(TargetType.INPUT)
        if not inputs:
            return args, kwargs
        args = list(args)
        for name, ref in inputs.items():
            key = ref.key
            if key is None and ref.position is not None and ref.position >= len(args) \
                    and ref.position < len(self._arg_names):
                key = self._arg_names[ref.position]  # passed by keyword
            if key is not None and key in kwargs:
                if isinstance(kwargs[key], torch.Tensor):
                    kwargs[key] = self.apply_target(name, kwargs[key])
            elif ref.position is not None and ref.position < len(args):
                if isinstance(args[ref.position], torch.Tensor):
                    args[ref.position] = self.apply_target(name, args[ref.position])
        return tuple(args), kwargs

    def _patch_outputs(self, output: Any) -> Any:
        for name, ref in self._targets_of(TargetType.OUTPUT).items():
            if isinstance(output, torch.Tensor) and ref.position == 0:
                output = self._apply_checked(name, output)
            elif ref.key is not None and hasattr(output, "keys") and ref.key in output.keys():
                output[ref.key] = self._apply_checked(name, output[ref.key])
            elif ref.position is not None and isinstance(output, (tuple, list)) and ref.position < len(output):
                items = list(output)
                items[ref.position] = self._apply_checked(name, items[ref.position])
                output = items if isinstance(output, list) else tuple(items)
            elif ref.position is not None and hasattr(output, "keys") and ref.position < len(output):
                key = list(output.keys())[ref.position]  # a ModelOutput / dict, by position
                output[key] = self._apply_checked(name, output[key])
            else:
                raise CompressionError(
                    f"target {name!r} of {self.module_name!r} is not in its output ({type(output).__name__}"
                    f"{' with keys ' + str(list(output.keys())) if hasattr(output, 'keys') else ''}); name a "
                    "position (_output_{i}) or a key (_output_{key}) that the module returns.")
        return output

    def _apply_checked(self, name: str, value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise CompressionError(
                f"target {name!r} of {self.module_name!r} is a {type(value).__name__}, not a tensor; name the "
                "tensor inside it (_output_{key} for a dict, _output_{i} for a tuple).")
        return self.apply_target(name, value)

    @property
    def last_output(self) -> Any:
        """The output of this module's latest forward, while something still holds it."""
        return self._last_output() if self._last_output is not None else None

    def _remember(self, output: Any) -> Any:
        if self.track_output:
            try:
                self._last_output = weakref.ref(output)
            except TypeError:  # a plain tuple cannot be weakly referenced: fusion needs tensors
                self._last_output = None
        return output

    def _wrapped_forward(self, *args: Any, **kwargs: Any) -> Any:
        source = self.fused_source
        if source is not None:
            if args and args[0] is not None and args[0] is source.last_output:
                # A fused follower fed by its leader: the leader already computed this module.
                args, kwargs = self._patch_inputs(args, kwargs)
                return self._remember(self._patch_outputs(args[0]))
            if self.fused_strict:
                raise CompressionError(
                    f"{self.module_name!r} is fused after {source.module_name!r} (fuse_names) but was called on "
                    "another tensor; fuse only modules that run back to back on one tensor.")
        args, kwargs = self._patch_inputs(args, kwargs)
        original = self._previous_forward or type(self.module).forward.__get__(self.module)
        with self._swapped_tensors():
            output = original(*args, **kwargs)
        if self.fusion is not None:
            output = self.fusion.transform_output(output)
        return self._remember(self._patch_outputs(output))

    def extra_repr(self) -> str:
        kinds = {k: sorted(v) for k, v in self.target_spaces.items() if v}
        return f"module={self.module_name!r}, targets={kinds}"


def unwrap_all(wrappers: dict[str, ModuleWrapper]) -> None:
    """Unwrap every wrapper (the exact original module tree and state-dict keys come back)."""
    for wrapper in wrappers.values():
        wrapper.unwrap()
