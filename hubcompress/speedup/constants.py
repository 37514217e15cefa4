"""Input-independent channels, and folding them into the layer that reads them.

A masked convolution's output channel is zero, but BatchNorm turns it into its shift, a constant;
so do ``x - c`` and a masked Linear row's bias. Such a channel is *alive* (not zero) yet carries
nothing from the input. :class:`Variation` marks, per element of every tensor, whether it can vary
with the model's input: a forward pass on masks, like liveness', that over-approximates (an element
is marked varying whenever an input-dependent element can reach it), so a channel it calls
constant is constant for every input.

:func:`plan_fold` decides where a constant channel can be dropped. A Linear or convolution reading
channel ``c`` of value ``v`` adds ``W[:, c] * v`` to its outputs. Where that sum is the same at
every position (a Linear, an unpadded or 1x1 convolution) it goes into the bias. A zero-padded
convolution with a wider kernel sees fewer taps at the image border, so the sum is not the same
everywhere: there one constant channel, the carrier, stays, and each other constant channel's
weights are added to the carrier's, scaled by the ratio of their values, which is exact at every
position. Values come from the masked model's concrete run; a channel that is not one number
across its positions is kept.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import fx

aten = torch.ops.aten

# out[i] is a function of the inputs at (the broadcast of) i alone
ELEMENTWISE = {
    aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.add.Scalar, aten.sub.Scalar,
    aten.mul.Scalar, aten.div.Scalar, aten.rsub.Scalar, aten.rsub.Tensor, aten.gelu.default, aten.relu.default,
    aten.tanh.default, aten.sigmoid.default, aten.silu.default, aten.exp.default, aten.pow.Tensor_Scalar,
    aten.dropout.default, aten.clone.default, aten.contiguous.default, aten.alias.default, aten.detach.default,
    aten._to_copy.default, aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.type_as.default,
    aten.hardtanh.default, aten.relu6.default, aten.leaky_relu.default, aten.neg.default, aten.hardswish.default,
    aten.hardsigmoid.default, aten.sqrt.default, aten.rsqrt.default, aten.abs.default, aten.clamp.default,
    aten.clamp_min.default, aten.clamp_max.default, aten.erf.default, aten.log.default, aten.mish.default,
    aten.elu.default, aten.softplus.default, aten.maximum.default, aten.minimum.default, aten.where.self,
}
# ops that only move elements: evaluated on the masks themselves
STRUCTURAL = {
    aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.permute.default, aten.transpose.int,
    aten.t.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.expand.default,
    aten.flatten.using_ints, aten.unflatten.int, aten.cat.default, aten.stack.default, aten.split.Tensor,
    aten.split_with_sizes.default, aten.chunk.default, aten.slice.Tensor, aten.select.int,
}
# linear in their one tensor input, non-negative weights: evaluated on the masks
POOLING = {
    aten.adaptive_avg_pool1d.default, aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool3d.default,
    aten.avg_pool1d.default, aten.avg_pool2d.default, aten.avg_pool3d.default, aten.max_pool1d.default,
    aten.max_pool2d.default, aten.max_pool3d.default, aten.mean.dim, aten.sum.dim_IntList,
    aten.upsample_nearest1d.vec, aten.upsample_nearest2d.vec, aten.upsample_nearest3d.vec,
    aten.upsample_bilinear2d.vec, aten.upsample_linear1d.vec, aten.upsample_trilinear3d.vec,
    aten.upsample_bicubic2d.vec,
}
_CONV = {aten.conv1d.default, aten.conv2d.default, aten.conv3d.default}
_CONV_T = {aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input}
_BATCH_NORM = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}


def _float(mask: Any, shape: torch.Size) -> torch.Tensor:
    """A variation (True: all, False: none, or a bool tensor) as a 0/1 float tensor of ``shape``."""
    if mask is True:
        return torch.ones(shape)
    if mask is False:
        return torch.zeros(shape)
    return mask.float()


def _all_alive(mask: Any) -> bool:
    """A parameter's alive mask keeps every element (an unmasked one is a stride-0 view of ones)."""
    if not isinstance(mask, torch.Tensor):
        return mask is not None
    return (mask.dim() > 0 and all(s == 0 for s in mask.stride())) or bool((mask != 0).all())


def _rows_alive(weight: torch.Tensor, out_dim: int) -> torch.Tensor:
    if weight.dim() > 0 and not any(weight.stride()):  # unmasked: a view of ones
        return torch.ones(weight.shape[out_dim], dtype=torch.bool)
    dims = [d for d in range(weight.dim()) if d != out_dim]
    return weight.abs().amax(dim=dims) > 0 if dims else weight != 0


class _AllAlive(dict):
    """Alive masks of an unmasked model: ones (stride-0 views) of every tensor's shape."""

    def __init__(self, values: dict[str, Any]):
        super().__init__()
        self.values = values

    def __missing__(self, name: str) -> Any:
        value = self.values.get(name)
        if isinstance(value, (tuple, list)):
            return type(value)(torch.ones(()).expand(v.shape) if isinstance(v, torch.Tensor) else v for v in value)
        return torch.ones(()).expand(value.shape) if isinstance(value, torch.Tensor) else None

    def get(self, name: str, default: Any = None) -> Any:
        found = self[name]
        return default if found is None else found


class Variation:
    """``varies[node]``: True (every element can vary with the input), False (none can: a
    function of parameters alone) or a bool tensor of the node's shape."""

    def __init__(self, graph: fx.Graph, values: dict[str, Any], tracked: set[str], params: set[str],
                 alive: dict[str, Any] | None, user_inputs: list[str]):
        # alive None: as if nothing were masked (every tensor alive everywhere)
        self.graph, self.values, self.tracked, self.params = graph, values, tracked, params
        self.alive = alive if alive is not None else _AllAlive(values)
        self.derived: set[str] = set(user_inputs)  # every node computed from a model input
        self.varies: dict[str, Any] = {}

    def _of(self, arg: Any) -> Any:
        if not isinstance(arg, fx.Node) or arg.name in self.params:
            return False
        if arg.name in self.tracked:
            return self.varies.get(arg.name, True)
        return arg.name in self.derived  # an input-derived int tensor (token ids) varies everywhere

    def _alive(self, arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            if arg.name in self.tracked:
                return self.alive[arg.name]
            value = self.values.get(arg.name)
            return (value != 0).float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
        return arg

    def run(self) -> dict[str, Any]:
        for node in self.graph.nodes:
            if node.op != "call_function":
                if node.op == "placeholder" and node.name in self.derived:
                    self.varies[node.name] = True
                continue
            inputs = _flat_nodes((node.args, node.kwargs))
            if any(n.name in self.derived for n in inputs):
                self.derived.add(node.name)
            if node.name not in self.tracked:
                continue
            marks = [self._of(n) for n in inputs]
            if all(m is False for m in marks):
                self.varies[node.name] = False
                continue
            try:
                self.varies[node.name] = self._rule(node, marks)
            except Exception:  # noqa: BLE001 - an op met in an unexpected form: everything varies (safe)
                self.varies[node.name] = True
        return self.varies

    def _rule(self, node: fx.Node, marks: list) -> Any:
        op, value = node.target, self.values.get(node.name)
        if op is operator.getitem:
            src = self.varies.get(node.args[0].name, True) if node.args[0].name in self.tracked else True
            return src[node.args[1]] if isinstance(src, (tuple, list)) else src
        if op in ELEMENTWISE:
            if any(m is True for m in marks):
                return True
            out = torch.zeros(value.shape, dtype=torch.bool)
            for m in marks:
                if isinstance(m, torch.Tensor):
                    out = out | torch.broadcast_to(m, value.shape)
            return out
        if op in STRUCTURAL:
            tensor_marks = [m for m in marks if m is not False]
            if tensor_marks and all(m is True for m in tensor_marks) and op not in (aten.cat.default, aten.stack.default):
                return True
            return _bin(op(*self._masks(node.args), **self._masks(node.kwargs)))
        if op in POOLING:
            if marks[0] is True:
                return True
            return _bin(op(*self._masks(node.args), **self._masks(node.kwargs)))
        if op in (aten.linear.default, aten.addmm.default) or op in _CONV or op in _CONV_T or \
                op is aten.convolution.default:
            return self._weighted(node, marks)
        if op in _BATCH_NORM:
            x, w = node.args[0], node.args[1]
            out = self._scaled_by(self._of(x), w, self.values[x.name].shape, 1)
            return (out, False, False) if op is aten._native_batch_norm_legit_no_training.default else out
        if op in (aten.layer_norm.default, aten.group_norm.default, aten._softmax.default, aten.softmax.int):
            return self._normalised(node)
        return True  # any other op: everything it makes may vary

    def _masks(self, arg: Any) -> Any:
        """Arguments for evaluating an op on variation masks (parameters and constants: zero)."""
        if isinstance(arg, fx.Node):
            if arg.name in self.tracked or arg.name in self.derived:
                value = self.values[arg.name]
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    return _float(self._of(arg), value.shape)
                return value
            value = self.values.get(arg.name)
            return torch.zeros_like(value) if isinstance(value, torch.Tensor) and value.is_floating_point() else value
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._masks(a) for a in arg)
        if isinstance(arg, dict):
            return {k: self._masks(v) for k, v in arg.items()}
        return arg

    def _weighted(self, node: fx.Node, marks: list) -> Any:
        """Linear maps with a parameter weight: an output varies where an alive weight reads a
        varying input; the bias adds a constant."""
        op, shape = node.target, self.values[node.name].shape
        if op is aten.addmm.default:
            bias_pos, x, w, out_dim = 0, node.args[1], node.args[2], 1
        else:
            bias_pos, x, w, out_dim = 2, node.args[0], node.args[1], 0
        transposed = op in _CONV_T or (op is aten.convolution.default and node.args[6])
        if not (isinstance(w, fx.Node) and w.name in self.params):  # an activation as weight
            return True if any(m is True for m in marks) else self._generic(node, bias_pos)
        if self._of(x) is True and not transposed:
            rows = _rows_alive(self.alive[w.name], out_dim)
            if bool(rows.all()):
                return True
            view = [1] * len(shape)
            view[-1 if op in (aten.linear.default, aten.addmm.default) else 1] = -1
            return rows.reshape(view).expand(shape).clone()
        return self._generic(node, bias_pos)

    def _generic(self, node: fx.Node, bias_pos: int) -> torch.Tensor:
        """Sum over each varying argument of the op evaluated with that argument's variation and
        the others' alive masks, the additive bias left out."""
        out = torch.zeros(self.values[node.name].shape, dtype=torch.bool)
        args = list(node.args)
        for i, a in enumerate(args):
            if i == bias_pos or not isinstance(a, fx.Node) or self._of(a) is False:
                continue
            call = [self._alive(b) if isinstance(b, fx.Node) else b for b in args]
            call[i] = _float(self._of(a), self.values[a.name].shape)
            for j, b in enumerate(args):
                if j != i and isinstance(b, fx.Node) and isinstance(call[j], torch.Tensor):
                    call[j] = call[j].float()
            if bias_pos < len(call) and call[bias_pos] is not None:
                call[bias_pos] = None if node.target is not aten.addmm.default else torch.zeros(())
            out = out | (node.target(*call, **node.kwargs) != 0)
        return out

    def _scaled_by(self, mark: Any, weight: Any, shape: torch.Size, dim: int) -> Any:
        """Per-channel affine maps: varies where the input does and the channel's scale is alive."""
        if mark is False:
            return False
        scale = self.alive.get(weight.name) if isinstance(weight, fx.Node) else None
        if scale is None or _all_alive(scale):
            return mark
        view = [1] * len(shape)
        view[dim] = -1
        base = torch.ones(shape, dtype=torch.bool) if mark is True else torch.broadcast_to(mark, shape)
        return base & (scale != 0).reshape(view)

    def _normalised(self, node: fx.Node) -> Any:
        """Statistics mix a row (layer norm, softmax) or a group: one varying element makes all
        of them vary (the weight of a layer norm may still zero a channel)."""
        x = node.args[0]
        mark, shape = self._of(x), self.values[x.name].shape
        op = node.target
        if op is aten.layer_norm.default:
            weight = node.args[2] if len(node.args) > 2 else None
            dims = list(range(len(shape) - len(node.args[1]), len(shape)))
            if mark is not True:
                mark = torch.broadcast_to(mark, shape).amax(dim=dims, keepdim=True).expand(shape)
            scale = self.alive.get(weight.name) if isinstance(weight, fx.Node) else None
            if scale is None or _all_alive(scale):
                return mark
            base = torch.ones(shape, dtype=torch.bool) if mark is True else mark
            return base & (scale != 0)
        if op is aten.group_norm.default:
            if mark is not True:
                groups = node.args[1]
                grid = torch.broadcast_to(mark, shape).reshape(shape[0], groups, -1)
                mark = grid.amax(-1, keepdim=True).expand_as(grid).reshape(shape)
            return self._scaled_by(mark, node.args[2] if len(node.args) > 2 else None, shape, 1)
        if mark is True:
            return True
        return torch.broadcast_to(mark, shape).amax(dim=node.args[1], keepdim=True).expand(shape).clone()


def _bin(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_bin(v) for v in value)
    return value != 0 if isinstance(value, torch.Tensor) else value


def _flat_nodes(arg: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(arg, lambda n: out.append(n) or n)
    return out


# --- folding -------------------------------------------------------------------------------------

@dataclass
class FoldPlan:
    """Constant channels ``values`` (index -> value) of ``x`` along ``dim`` that ``node`` reads
    through ``weight`` and that may be removed once folded: into the bias (``kind="bias"``), or into
    the weights of the ``carrier`` channel (index, value), which stays."""

    node: str
    x: str
    dim: int
    weight: str
    bias: str | None
    layout: str  # "linear" (W[out, in]), "addmm" (W[in, out]) or "conv" (W[out, in, *kernel])
    kind: str
    values: dict[int, float] = field(default_factory=dict)
    carrier: tuple[int, float] | None = None


def _conv_geometry(node: fx.Node) -> tuple[list[int], int, bool] | None:
    """(padding, groups, transposed) of a convolution node; None for other ops."""
    op, args = node.target, node.args
    if op in _CONV:
        padding = args[4] if len(args) > 4 else 0
        groups = args[6] if len(args) > 6 else 1
        return (list(padding) if isinstance(padding, (list, tuple)) else [padding]), groups, False
    if op is aten.convolution.default:
        return list(args[4]), args[8], bool(args[6])
    return None


def plan_fold(node: fx.Node, variation: Variation, params: set[str], can_add_bias: Callable[[str], bool],
              unmasked: Callable[[], Variation]) -> FoldPlan | None:
    """Which constant channels ``node`` (a Linear, HF Conv1D's addmm or an ungrouped convolution
    with a parameter weight read by no other node) can absorb. Only channels the masks made
    constant: ``unmasked()`` is the variation of the model without masks, and a channel that is
    constant there too (a learned constant input, a CLS token) stays, trainable."""
    op, args = node.target, node.args
    if op is aten.linear.default:
        x, w, b, layout, dim = args[0], args[1], (args[2] if len(args) > 2 else None), "linear", -1
    elif op is aten.addmm.default:
        b, x, w, layout, dim = args[0], args[1], args[2], "addmm", 1
    else:
        geometry = _conv_geometry(node)
        if geometry is None:
            return None
        padding, groups, transposed = geometry
        if groups != 1 or transposed:
            return None
        x, w, b, layout, dim = args[0], args[1], (args[2] if len(args) > 2 else None), "conv", 1
    if not (isinstance(x, fx.Node) and x.name in variation.tracked and isinstance(w, fx.Node) and w.name in params):
        return None  # ``params``: the parameters this pass may change (no tied copies elsewhere)
    mark = variation.varies.get(x.name, True)
    if mark is True or len(w.users) != 1:
        return None
    value = variation.values[x.name]
    alive = variation.alive[x.name]
    dim %= value.dim()
    others = [d for d in range(value.dim()) if d != dim]
    varying = torch.broadcast_to(torch.as_tensor(mark), value.shape).amax(dim=others) if mark is not False \
        else torch.zeros(value.shape[dim], dtype=torch.bool)
    alive_any = (torch.broadcast_to(alive, value.shape) != 0).amax(dim=others)
    constant = alive_any & ~varying
    if not bool(constant.any()):
        return None
    before = unmasked().varies.get(x.name, True)
    if before is not True:
        constant &= torch.broadcast_to(torch.as_tensor(before), value.shape).amax(dim=others) if before is not False \
            else torch.zeros_like(constant)
    candidates = torch.nonzero(constant).flatten()
    if candidates.numel() == 0:
        return None
    rows = value.movedim(dim, 0).reshape(value.shape[dim], -1)[candidates].float()
    first = rows[:, :1]
    uniform = (rows - first).abs().amax(1) <= 1e-6 * first.abs().squeeze(1).clamp_min(1.0)
    values = {int(i): float(v) for i, v, u in zip(candidates, first.squeeze(1), uniform) if u}
    if not values:
        return None
    kind = "bias"
    if layout == "conv":
        kernel = list(variation.values[w.name].shape[2:])
        if any(p != 0 for p in padding) and any(k != 1 for k in kernel):
            kind = "carrier"  # zero padding: the border sees fewer taps
    bias_ok = isinstance(b, fx.Node) and b.name in params and len(b.users) == 1
    if kind == "bias" and not (bias_ok if b is not None else can_add_bias(w.name)):
        kind = "carrier"  # no bias of its own to change, and none can be added
    plan = FoldPlan(node.name, x.name, dim, w.name, b.name if bias_ok else None, layout, kind)
    if kind == "carrier":  # the carrier must stay: a non-zero value read by an alive weight column
        w_alive = variation.alive[w.name]
        reads = (torch.broadcast_to(w_alive, variation.values[w.name].shape) != 0)
        reads = (reads if layout == "addmm" else reads.transpose(0, 1)).flatten(1).any(1)
        nonzero = {i: v for i, v in values.items() if v != 0.0 and bool(reads[i])}
        if nonzero:
            c = max(nonzero, key=lambda i: abs(nonzero[i]))
            plan.carrier = (c, nonzero[c])
            values = {i: v for i, v in values.items() if i != c}
    plan.values = values
    return plan if values else None


def apply_fold(plan: FoldPlan, removed: list[int], weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """Fold the removed constant channels into ``bias`` (returned; a new one when None) or into
    the carrier's weights (in place). ``weight`` and ``bias`` are the consumer's full tensors."""
    def column(i: int) -> torch.Tensor:
        return weight[i] if plan.layout == "addmm" else weight[:, i]

    with torch.no_grad():
        if plan.kind == "carrier":
            if plan.carrier is None:
                return bias  # every removed channel was zero
            c, vc = plan.carrier
            target = column(c)
            for i in removed:
                if plan.values[i] != 0.0:
                    target.add_(column(i) * (plan.values[i] / vc))
            return bias
        delta = torch.zeros(weight.shape[1] if plan.layout == "addmm" else weight.shape[0], dtype=torch.float64)
        for i in removed:
            v = plan.values[i]
            if v != 0.0:
                col = column(i).double()
                delta += v * (col.flatten(1).sum(1) if col.dim() > 1 else col)
        if bias is None:
            return delta.to(weight.dtype)
        bias.add_(delta.to(bias.dtype))
        return bias
