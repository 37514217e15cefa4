"""``ModelSpeedup``: masks in, a physically smaller model out (NNI 3.0's call shape)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from ..architectures import BLOCK_FIXERS
from ..errors import ReplacementError
from .activation_masks import fold_activation_masks
from .constants import Variation, apply_fold, plan_fold
from .coupling import MASK_UPDATERS, Coupler
from .liveness import Liveness
from .module_view import NodeInfo, build_node_infos
from .replacers import REPLACERS
from .tracing import TracedGraph, normalise_dummy_input, trace, trace_graph_module

logger = logging.getLogger(__name__)
Masks = dict[str, dict[str, torch.Tensor]]


@dataclass
class SpeedupReport:
    """What changed: per module the parameter shapes before and after, and where the achieved
    sparsity of a mask fell short (a residual add or a model output forced channels to stay)."""

    shapes: dict[str, dict[str, tuple[list[int], list[int]]]] = field(default_factory=dict)
    shortfalls: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    pinned: dict[str, str] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)  # module -> input channels folded into it
    max_abs_diff: float | None = None
    params_before: int = 0
    params_after: int = 0
    flops_before: int | None = None  # on the dummy input, counted during the output check
    flops_after: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"shapes": self.shapes, "shortfalls": self.shortfalls, "folded": self.folded,
                "max_abs_diff": self.max_abs_diff,
                "params_before": self.params_before, "params_after": self.params_after,
                "flops_before": self.flops_before, "flops_after": self.flops_after}


# the activation targets speedup reads, by the canonical name it folds them under
_FIRST_ACTIVATION = {"_input_": "_input_", "_input_0": "_input_", "_output_": "_output_", "_output_0": "_output_"}


class ModelSpeedup:
    """Replace masked modules with smaller ones.

    ``dummy_input`` is a tensor, a tuple of positional arguments or a dict of keyword arguments;
    the model runs on it once for tracing and once more, before and after, to check the
    sped-up model gives the masked model's outputs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        >>> keep = torch.tensor([1., 1., 0., 1., 0., 1.])
        >>> masks = {"0": {"weight": keep[:, None].expand(6, 4), "bias": keep}}
        >>> net = ModelSpeedup(net, torch.randn(3, 4), masks).speedup_model()
        >>> net[0].out_features, net[2].in_features
        (4, 4)
    """

    def __init__(self, model: nn.Module, dummy_input: Any, masks: Masks,
                 customized_replacers: dict[str, Callable] | None = None,
                 customized_mask_updaters: dict[Any, Callable] | None = None,
                 graph_module: fx.GraphModule | None = None, *, check_outputs: bool = True,
                 tolerance: float = 1e-4):
        self.model = model
        self.dummy_input = dummy_input
        self.masks = masks
        self.replacers = {**REPLACERS, **(customized_replacers or {})}
        self.mask_updaters = {**MASK_UPDATERS, **(customized_mask_updaters or {})}
        self.graph_module = graph_module
        self.check_outputs = check_outputs
        self.tolerance = tolerance
        self.report = SpeedupReport()
        self._coupler: Coupler | None = None
        self._node_infos: dict[fx.Node, NodeInfo] | None = None

    # --- steps ---------------------------------------------------------------------------------
    def _validate_masks(self) -> tuple[dict[str, torch.Tensor], dict[tuple[str, str], torch.Tensor]]:
        modules = dict(self.model.named_modules())
        param_masks: dict[str, torch.Tensor] = {}
        activation_masks: dict[tuple[str, str], torch.Tensor] = {}
        for module_name, targets in self.masks.items():
            if module_name not in modules:
                raise ReplacementError(f"masks name module {module_name!r}, which the model does not have.")
            module = modules[module_name]
            for target, mask in targets.items():
                if target in _FIRST_ACTIVATION:
                    activation_masks[(module_name, _FIRST_ACTIVATION[target])] = mask.float()
                elif target.startswith(("_input_", "_output_")):
                    raise ReplacementError(f"{module_name}.{target}: speedup reads masks on a module's first input "
                                           "or output (_input_, _output_); fold others into parameters first.")
                else:
                    tensor = module._parameters.get(target)
                    if tensor is None:
                        tensor = module._buffers.get(target)
                    if tensor is None:
                        raise ReplacementError(f"masks name {module_name}.{target}, not a parameter or buffer.")
                    if tuple(mask.shape) != tuple(tensor.shape):
                        raise ReplacementError(f"mask of {module_name}.{target} has shape {tuple(mask.shape)}, "
                                               f"the tensor {tuple(tensor.shape)}.")
                    param_masks[f"{module_name}.{target}" if module_name else target] = mask
        return param_masks, activation_masks

    def _run(self, model: nn.Module) -> tuple[Any, int | None]:
        """The model's outputs on the dummy input, and the FLOPs it took (None where torch cannot count)."""
        args, kwargs = normalise_dummy_input(self.dummy_input)
        try:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                out = model(*args, **kwargs)
            return out, counter.get_total_flops()
        except AssertionError:
            # the counter's module tracker asserts on a submodule input that is a view of a parameter
            # (DeBERTa-v2 without norm_rel_ebd projects rel_embeddings.weight[a:b] directly)
            logger.debug("FLOP counting failed on %s; running without it", type(model).__name__, exc_info=True)
            with torch.no_grad():
                return model(*args, **kwargs), None

    def _analyse(self, traced: TracedGraph, param_masks: dict[str, torch.Tensor]) -> Coupler:
        values = traced.values
        tracked: set[str] = set()
        for node in traced.graph.nodes:
            value = values.get(node.name)
            floats = _is_float(value)
            if node.op == "placeholder":
                if floats:
                    tracked.add(node.name)
            elif node.op == "call_function" and floats and any(a.name in tracked for a in _node_args(node)):
                tracked.add(node.name)
        node_of, state = self._node_of, self._state
        seeds = {node_of[id(state[f])]: m.float() for f, m in param_masks.items() if id(state[f]) in node_of}
        param_nodes = set(traced.params) & tracked
        live = Liveness(traced.graph, values, tracked, seeds, param_nodes)
        live.run_forward()
        variation = Variation(traced.graph, values, tracked, param_nodes, live.alive, traced.user_inputs)
        variation.run()
        owners: dict[int, int] = {}
        for tensor in state.values():
            owners[id(tensor)] = owners.get(id(tensor), 0) + 1
        own = {n for n in param_nodes if owners.get(id(state.get(traced.params[n])), 0) == 1}  # not tied
        unmasked: list[Variation] = []

        def without_masks() -> Variation:  # computed once, and only if some channel is constant
            if not unmasked:
                unmasked.append(Variation(traced.graph, values, tracked, param_nodes, None, traced.user_inputs))
                unmasked[0].run()
            return unmasked[0]
        live.fold_planner = lambda node: plan_fold(node, variation, own, self._can_add_bias, without_masks)
        live.run_backward()
        self._folds = live.folds
        shapes, keep = {}, {}
        for name in tracked:
            alive, used = live.alive.get(name), live.used.get(name)
            if not isinstance(alive, torch.Tensor):
                continue
            if name in param_nodes:
                # A parameter keeps what its mask keeps, an unmasked one everything; a buffer
                # (running statistics) keeps only what the tensors it is tied to keep.
                shapes[name] = tuple(alive.shape)
                mask = seeds.get(name)
                used_vectors = live.param_used.get(name)
                mask_vectors = _any_per_dim(mask) if mask is not None else None
                for d in range(alive.dim()):
                    if mask_vectors is not None:
                        vec = mask_vectors[d]
                    else:
                        vec = torch.full((alive.shape[d],), name not in traced.buffers)
                    if used_vectors is not None:
                        vec = (vec | (name in traced.buffers)) & used_vectors[d]
                    keep[(name, d)] = vec
                continue
            shapes[name] = tuple(alive.shape)
            if isinstance(used, torch.Tensor):  # both are 0/1 masks: their product is "alive and used"
                vectors = _any_per_dim(alive * used if alive.is_floating_point() and used.is_floating_point()
                                       else torch.logical_and(alive, used))
            else:
                vectors = [torch.zeros(n, dtype=torch.bool) for n in alive.shape]
            for d, vec in enumerate(vectors):
                keep[(name, d)] = vec
        coupler = Coupler(shapes, keep)
        for node in traced.graph.nodes:
            if node.op == "placeholder" and node.name in traced.user_inputs:
                coupler.pin(node, "a model input")
            elif node.op == "output":
                for out in _node_args(node):
                    coupler.pin(out, "a model output")
            elif node.op == "call_function" and (node.name in shapes or any(a.name in shapes for a in _node_args(node))):
                rule = self.mask_updaters.get(node.target)
                if rule is None:
                    for t in [node] + _node_args(node):
                        coupler.pin(t, f"no mask updater for {node.target}")
                else:
                    rule(node, coupler)
            if node.name in live.unknown:
                coupler.pin(node, f"no liveness rule for {node.target}")
        coupler.solve()
        self.report.pinned = {k: v for k, v in coupler.pinned_by.items()}
        return coupler

    @property
    def node_infos(self) -> dict[fx.Node, NodeInfo]:
        """NNI's ``node_infos`` after ``speedup_model()``: ``{node: NodeInfo}`` over a torch.fx graph
        of module calls (``node.op``, ``.target``, ``.args``), each with ``output_masks`` and, for a
        ``call_module`` node, ``param_masks``: 0/1 tensors in the original shapes, 1 where speedup
        kept the element (see ``module_view``). Built on first use."""
        if self._node_infos is None:
            if self._coupler is None:
                raise ReplacementError("node_infos describe what speedup kept: call speedup_model() first.")
            self._node_infos = build_node_infos(self._traced, self._coupler.keep, self._coupler.shapes,
                                                dict(self.model.named_modules()))
        return self._node_infos

    def _can_add_bias(self, weight_node: str) -> bool:
        """A constant may be folded into a new bias of a stock Linear or convolution."""
        fqn = self._traced.params.get(weight_node, "")
        owner, _, pname = fqn.rpartition(".")
        module = dict(self.model.named_modules()).get(owner) if pname == "weight" else None
        return type(module) in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d) and module.bias is None

    def _apply_folds(self, coupler: Coupler) -> None:
        """Constant channels that speedup removes are added to the bias (or the carrier channel's
        weights) of the layer that read them, so its outputs stay the same."""
        modules = dict(self.model.named_modules())
        for plan in self._folds:
            keep = coupler.keep.get((plan.x, plan.dim))
            if keep is None:
                continue
            removed = [i for i in plan.values if not bool(keep[i])]
            if not removed:
                continue
            if plan.carrier is not None and not bool(keep[plan.carrier[0]]):
                raise ReplacementError(f"speedup removed the channel carrying the constants of {plan.node}'s input; "
                                       "please report this model with its masks.")
            fqn = self._traced.params[plan.weight]
            weight = self._state[fqn]
            bias = self._state[self._traced.params[plan.bias]] if plan.bias is not None else None
            folded = apply_fold(plan, removed, weight.data, bias.data if bias is not None else None)
            if bias is None and folded is not None:
                owner = modules[fqn.rpartition(".")[0]]
                owner.bias = nn.Parameter(folded.to(weight.device), requires_grad=weight.requires_grad)
            self.report.folded[fqn.rpartition(".")[0]] = self.report.folded.get(fqn.rpartition(".")[0], 0) + len(removed)

    def _fold_activation_masks(self, activation_masks: dict, param_masks: dict[str, torch.Tensor]) -> None:
        """Only parameters carry masks from here on (see ``activation_masks``)."""
        fold_activation_masks(dict(self.model.named_modules()), activation_masks, param_masks)

    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer by every name it has (tied weights have two)."""
        state = dict(self.model.named_parameters(remove_duplicate=False))
        state.update(dict(self.model.named_buffers(remove_duplicate=False)))
        return state

    def _nodes_by_tensor(self, traced: TracedGraph) -> dict[int, str]:
        """Parameter placeholders by tensor identity: tied weights (GPT-2's wte and lm_head)
        share one tensor under two names, and the graph reads it through one of them."""
        state = self._state
        used = {n.name for n in traced.graph.nodes if n.op == "placeholder" and n.users}
        return {id(state[fqn]): node for node, fqn in traced.params.items() if node in used and fqn in state}

    def _replace(self, traced: TracedGraph, coupler: Coupler) -> None:
        node_of = self._node_of
        for module_name, module in list(self.model.named_modules()):
            own = list(module._parameters.items()) + list(module._buffers.items())
            keep: dict[str, list[torch.Tensor]] = {}
            for pname, tensor in own:
                node = node_of.get(id(tensor))
                if tensor is None or node is None or node not in coupler.shapes:
                    continue
                keep[pname] = [coupler.keep[(node, d)] for d in range(tensor.dim())]
            if not keep or all(bool(v.all()) for vs in keep.values() for v in vs):
                continue
            cls = type(module).__name__
            replacer = self.replacers.get(cls)
            if replacer is None:
                raise ReplacementError(
                    f"module {module_name!r} ({cls}) must shrink but has no replacer. Add one: "
                    f"ModelSpeedup(..., customized_replacers={{{cls!r}: fn}}) or "
                    f"@hubcompress.speedup.register_replacer({cls!r}), where fn(module, keep) builds the smaller module "
                    "from keep = {param_name: [bool vector per dim]}.")
            new = replacer(module, keep)
            before = {n: list(t.shape) for n, t in own if t is not None}
            after = {n: list(t.shape) for n, t in list(new._parameters.items()) + list(new._buffers.items())
                     if t is not None}
            self.report.shapes[module_name] = {n: (before[n], after.get(n, [])) for n in before}
            _set_module(self.model, module_name, new)
        for module_name, module in self.model.named_modules():
            fixer = BLOCK_FIXERS.get(type(module).__name__)
            if fixer is not None and any(k.startswith(module_name + ".") for k in self.report.shapes):
                fixer(module, module_name)

    def _shortfalls(self, param_masks: dict[str, torch.Tensor], traced: TracedGraph, coupler: Coupler) -> None:
        node_of, state = self._node_of, self._state
        for fqn, mask in param_masks.items():
            node = node_of.get(id(state[fqn]))
            if node is None or node not in coupler.shapes:
                continue
            # what stays is the product of the kept indices of each dim
            kept = 1.0
            for d in range(mask.dim()):
                vector = coupler.keep[(node, d)]
                kept *= float(vector.sum()) / max(vector.numel(), 1)
            asked = 1.0 - float(torch.count_nonzero(mask)) / max(mask.numel(), 1)
            achieved = 1.0 - kept
            if achieved + 1e-9 < asked:
                module, _, target = fqn.rpartition(".")
                self.report.shortfalls.setdefault(module, {})[target] = {"masked": round(asked, 4),
                                                                        "removed": round(achieved, 4)}

    def speedup_model(self) -> nn.Module:
        """Shrink the model in place and return it; ``self.report`` says what changed."""
        config = getattr(self.model, "config", None)
        use_cache = getattr(config, "use_cache", None)
        if use_cache:  # a cache object in the outputs is neither traceable nor comparable
            config.use_cache = False
        try:
            return self._speedup()
        finally:
            if use_cache:
                config.use_cache = use_cache

    def _speedup(self) -> nn.Module:
        self.report.params_before = sum(p.numel() for p in self.model.parameters())
        param_masks, activation_masks = self._validate_masks()
        self._fold_activation_masks(activation_masks, param_masks)
        self._state = state = self._tensors()
        with torch.no_grad():  # the masked model: masked entries are zeros from here on
            for fqn, mask in param_masks.items():
                state[fqn].mul_(mask.to(state[fqn].dtype))
        was_training = self.model.training
        self.model.eval()
        reference = None
        if self.check_outputs:
            reference, self.report.flops_before = self._run(self.model)
        traced = (trace_graph_module(self.model, self.graph_module, self.dummy_input) if self.graph_module is not None
                  else trace(self.model, self.dummy_input))
        self._node_of = self._nodes_by_tensor(traced)
        self._traced = traced
        coupler = self._analyse(traced, param_masks)
        self._coupler = coupler
        self._shortfalls(param_masks, traced, coupler)
        self._apply_folds(coupler)
        self._replace(traced, coupler)
        if hasattr(self.model, "tie_weights"):  # replacing modules untied shared weights
            self.model.tie_weights()
        if reference is not None:
            result, self.report.flops_after = self._run(self.model)
            self.report.max_abs_diff = _compare(reference, result, self.tolerance)
        self.model.train(was_training)
        self.report.params_after = sum(p.numel() for p in self.model.parameters())
        for module, targets in self.report.shortfalls.items():
            logger.warning("speedup removed less than the masks of %s: %s", module, targets)
        return self.model


def _any_per_dim(t: torch.Tensor) -> list[torch.Tensor]:
    """For each dim of a non-negative mask, which of its indices have some non-zero element: two
    passes over ``t`` (one per half of its dims) instead of one per dim, none when ``t`` is a
    broadcast constant, and ``amax`` rather than ``any`` (an order of magnitude faster on CPU)."""
    if t.dim() == 0:
        return []
    if not any(t.stride()):  # a stride-0 view: one value everywhere
        value = bool(t.reshape(-1)[0]) if t.numel() else False
        return [torch.full((n,), value) for n in t.shape]
    if t.dtype == torch.bool:
        t = t.view(torch.uint8)
    if t.dim() == 1:
        return [t > 0]
    half = t.dim() // 2
    head = t.amax(dim=list(range(half, t.dim())))
    tail = t.amax(dim=list(range(half)))
    out = []
    for part in (head, tail):
        for d in range(part.dim()):
            others = [x for x in range(part.dim()) if x != d]
            out.append((part.amax(dim=others) if others else part) > 0)
    return out


def _node_args(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n) or n)
    return out


def _is_float(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    if isinstance(value, (tuple, list)) and value:
        return all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in value)
    return False


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _flat_outputs(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if hasattr(value, "to_tuple"):
        value = value.to_tuple()
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat_outputs(v)]
    return []


def _compare(reference: Any, result: Any, tolerance: float) -> float:
    worst = 0.0
    for i, (a, b) in enumerate(zip(_flat_outputs(reference), _flat_outputs(result))):
        if a.shape != b.shape:
            raise ReplacementError(f"output {i} changed shape after speedup: {tuple(a.shape)} -> {tuple(b.shape)}.")
        scale = float(a.abs().max()) or 1.0
        diff = float((a - b).abs().max())
        worst = max(worst, diff)
        if diff > tolerance * max(scale, 1.0):
            raise ReplacementError(f"output {i} differs from the masked model by {diff:.3g} (scale {scale:.3g}) after "
                                   "speedup; please report this model with the masks.")
    return worst

