"""How many values one forward pass produces, counted from shapes alone, so that a scan too large
for the machine is refused before anything is allocated.

Two ways, the same figure (every op's outputs, the input and views included, as torch's
dispatcher sees them at batch 1): shape arithmetic over the module's fx graph (:func:`arithmetic_values`,
for graphs whose every op has a rule below: plain CNNs and MLPs, milliseconds), else the forward
pass on fake tensors (:func:`fake_values`, any model; importing it costs about a second, since
fake tensors bring dynamo with them).  A test holds the two equal on the examples zoo.
"""
from __future__ import annotations

import logging
import math
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


def activation_values(model: nn.Module, input_shape) -> int | None:
    """Values produced by one forward pass at batch 1 (parameters not counted); None when the
    model cannot run on fake tensors (then the real forward pass says what is wrong)."""
    counted = arithmetic_values(model, input_shape)
    return counted if counted is not None else fake_values(model, input_shape)


# -- shape arithmetic -------------------------------------------------------------------------

_SAME = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
         nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Identity, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)
_SAME_FN = {F.relu, F.leaky_relu, F.gelu, F.silu, F.elu, F.softplus, F.hardswish, F.hardsigmoid,
            torch.relu, torch.sigmoid, torch.tanh, F.dropout}
_BROADCAST_FN = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul}
_SAME_METHOD = {"relu", "sigmoid", "tanh", "contiguous"}


class _NoRule(Exception):
    """An op without a shape rule here: the fake-tensor count decides."""


def arithmetic_values(model: nn.Module, input_shape) -> int | None:
    """The fake-tensor count (:func:`fake_values`) by arithmetic on the fx graph; None when the
    model does not trace with fx or an op has no rule here."""
    try:
        gm = fx.symbolic_trace(model.eval())
        shapes: dict = {}
        total = 0
        for node in gm.graph.nodes:
            shapes[node] = _shape_of(node, gm, shapes, input_shape)
            total += _dispatched(node, gm, shapes)
        return total
    except Exception:   # anything fx or a rule cannot read: the reference count decides
        return None


_PASS = (nn.Identity, nn.Dropout)   # at eval they hand their input back: no op reaches the dispatcher


def _dispatched(node: fx.Node, gm: fx.GraphModule, shapes: dict) -> int:
    """The values the fake-tensor count sees for ``node``: its output, and what the aten ops
    behind it add (max pooling's indices, Linear's view of W^T, a non-zero padding's padded
    copy); nothing for ops that return their input."""
    shape = shapes[node]
    if node.op in ("output", "get_attr") or not isinstance(shape, tuple):
        return 0
    if (node.op == "call_function" and node.target is F.dropout) or (node.op == "call_method" and node.target == "contiguous"):
        return 0
    values = math.prod(shape)
    m = gm.get_submodule(node.target) if node.op == "call_module" else None
    if isinstance(m, _PASS):
        return 0
    if isinstance(m, nn.MaxPool2d):
        return 2 * values
    if isinstance(m, nn.Linear):
        return values + m.weight.numel()
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        x = shapes[node.args[0]]
        return values + math.prod(x[:2]) * (x[2] + 2 * m.padding[0]) * (x[3] + 2 * m.padding[1])
    return values


def _shape_of(node: fx.Node, gm: fx.GraphModule, shapes: dict, input_shape):
    arg = lambda i: shapes[node.args[i]] if isinstance(node.args[i], fx.Node) else node.args[i]   # noqa: E731
    if node.op == "placeholder":
        return (1, *map(int, input_shape))
    if node.op in ("output", "get_attr"):
        return None
    if node.op == "call_module":
        return _module_shape(gm.get_submodule(node.target), arg(0))
    if node.op == "call_function" and node.target in _SAME_FN:
        return arg(0)
    if node.op == "call_function" and node.target in _BROADCAST_FN:
        return _broadcast([arg(i) for i in range(2)])
    if node.op == "call_function" and node.target is torch.flatten:
        return _flatten(arg(0), *node.args[1:], **node.kwargs)
    if node.op == "call_function" and node.target is torch.cat:
        return _cat([shapes[a] for a in node.args[0]], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0))
    if node.op == "call_method" and node.target in _SAME_METHOD:
        return arg(0)
    if node.op == "call_method" and node.target == "flatten":
        return _flatten(arg(0), *node.args[1:], **node.kwargs)
    raise _NoRule(node.format_node())


def _module_shape(m: nn.Module, x: tuple) -> tuple:
    if isinstance(m, _SAME):
        return x
    if isinstance(m, nn.Conv2d) and isinstance(m.padding, tuple):
        return (x[0], m.out_channels, *(_window(x[2 + i], m.kernel_size[i], m.stride[i], m.padding[i],
                                                 m.dilation[i]) for i in range(2)))
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        pair = lambda v: v if isinstance(v, tuple) else (v, v)   # noqa: E731
        k, s, p = pair(m.kernel_size), pair(m.stride or m.kernel_size), pair(m.padding)
        d = pair(getattr(m, "dilation", 1))
        if m.ceil_mode:
            raise _NoRule("ceil_mode pooling")
        return (*x[:2], *(_window(x[2 + i], k[i], s[i], p[i], d[i]) for i in range(2)))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
        return (*x[:2], *(x[2 + i] if size[i] is None else size[i] for i in range(2)))
    if isinstance(m, nn.Linear) and len(x) == 2 and x[-1] == m.in_features:
        return (*x[:-1], m.out_features)
    if isinstance(m, nn.Flatten):
        return _flatten(x, m.start_dim, m.end_dim)
    raise _NoRule(type(m).__name__)


def _window(size: int, k: int, s: int, p: int, d: int) -> int:
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise _NoRule("empty output")   # the real forward will say what is wrong
    return out


def _broadcast(shapes: list) -> tuple:
    tensors = [s for s in shapes if isinstance(s, tuple)]
    if any(s is not None and not isinstance(s, (tuple, int, float)) for s in shapes) or not tensors:
        raise _NoRule("broadcast of non-tensors")
    return tuple(torch.broadcast_shapes(*tensors))


def _cat(parts: list, dim: int) -> tuple:
    d = dim % len(parts[0])
    return (*parts[0][:d], sum(p[d] for p in parts), *parts[0][d + 1:])


def _flatten(x: tuple, start_dim: int = 0, end_dim: int = -1) -> tuple:
    start, end = start_dim % len(x), end_dim % len(x)
    return (*x[:start], math.prod(x[start:end + 1]), *x[end + 1:])


# -- the reference: fake tensors --------------------------------------------------------------

class _Count(TorchDispatchMode):
    """Sums the element counts of every op's outputs."""

    def __init__(self):
        super().__init__()
        self.values = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.values += sum(t.numel() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def fake_values(model: nn.Module, input_shape) -> int | None:
    """Values produced by one forward pass at batch 1, counted on fake tensors (no memory);
    None when the model cannot run on them."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    counter = _Count()
    log = logging.getLogger("torch._subclasses.fake_tensor")   # it logs the failures we expect
    level, log.level = log.level, logging.CRITICAL
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), counter, torch.no_grad():
            model.eval()(torch.empty(1, *input_shape))
    except Exception:   # data-dependent code, numpy calls, a wrong shape...: no estimate, not an error
        return None
    finally:
        log.setLevel(level)
    return counter.values
