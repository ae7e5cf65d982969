"""Linear layers.

dL/dW = g x^T: once g is known the gradient rows alone determine the input (rank n); with a
bias, g = dL/db is *observed*, so x = dW[j,:] / db[j] for any j with db[j] != 0 -- a leak source
that needs no label and no upper layer.  Applied to T positions (tokens), dW = G X^T and the
input is determined only while T <= out_features; the rank engine treats it as a 1x1 conv.
"""
import operator
from math import prod

import torch
from archscan_kernels import ConvGeometry, linear_geometry
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind, arg, is_parameter, traced_shape
from archscan.layers.flow import PARAMETRIC


def _params(m, args, kwargs):
    if m is not None:
        return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}
    w = arg(args, kwargs, 1, "weight")
    b = arg(args, kwargs, 2, "bias")
    shape = tuple(w) if isinstance(w, (tuple, list)) else None
    return {"weight_shape": shape, "bias": b is not None}


def geometry(node) -> ConvGeometry:
    """A Linear seen as a 1x1 conv over its positions (every leading dimension but the batch)."""
    shape, p = node.in_shapes[0], node.params
    n_in = p.get("in_features") or shape[-1]
    positions = max(prod(shape[:-1]) // node.batch, 1)   # the batch wherever it sits, or merged into one
    return linear_geometry(n_in, p["out_features"], positions)


def leak_source(node, geom) -> bool:
    """With a bias at one position, dW_j / db_j is the input itself: no label or upper layer needed."""
    return bool(node.params.get("bias")) and geom.H * geom.W == 1


def gradient_layout(grad, geom):
    """The output gradient (positions, out) as the 1x1 conv's (out, positions)."""
    return grad.reshape(-1, geom.F).T


def _matmul(m, args, kwargs):
    """x @ W (torch.matmul, @, mm) or addmm(b, x, W) with W a parameter: a Linear written by hand."""
    addmm = len(args) == 3
    x_at, w_at = (1, 2) if addmm else (0, 1)
    if not is_parameter(args[w_at]):
        raise ValueError("no parameter operand on the right: not a Linear layer")
    shape = traced_shape(args[w_at])
    if shape is None or len(shape) != 2:
        raise ValueError("the weight's shape is unknown")
    return {"in_features": shape[0], "out_features": shape[1], "bias": addmm and is_parameter(args[0]),
            "_data_arg": x_at}


KINDS = (
    LayerKind("linear", "linear", PARAMETRIC, modules=(nn.Linear,), functions=(F.linear,),
              aten=("aten.linear",), params=_params, geometry=geometry, leak_source=leak_source,
              gradient_layout=gradient_layout,
              weight_params=lambda shape: {"out_features": shape[0], "in_features": shape[1]},
              why="gradient rows determine the input once g is known; a bias exposes g directly",
              attack=("linear", ()), attack_why="a functional Linear: the closed-form attacks need the module"),
    LayerKind("matmul", "linear", PARAMETRIC, functions=(operator.matmul, torch.matmul, torch.mm, torch.addmm),
              aten=("aten.mm", "aten.matmul", "aten.addmm"), params=_matmul, geometry=geometry,
              leak_source=leak_source, gradient_layout=gradient_layout,
              attack_why="a hand-written Linear: the closed-form attacks need an nn.Linear module",
              why="gradient rows determine the input once g is known; a bias exposes g directly",
              otherwise="product_matmul"),
)
