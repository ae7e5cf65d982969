"""Linear layers.

dL/dW = g x^T: once g is known the gradient rows alone determine the input (rank n); with a
bias, g = dL/db is *observed*, so x = dW[j,:] / db[j] for any j with db[j] != 0 -- a leak source
that needs no label and no upper layer.  Applied to T positions (tokens), dW = G X^T and the
input is determined only while T <= out_features; the rank engine treats it as a 1x1 conv.
"""
from math import prod

from archscan_kernels import ConvGeometry, linear_geometry
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind, arg
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
    positions = prod(shape[1:-1]) if len(shape) > 2 else 1
    return linear_geometry(n_in, p["out_features"], positions)


def leak_source(node, geom) -> bool:
    """With a bias at one position, dW_j / db_j is the input itself: no label or upper layer needed."""
    return bool(node.params.get("bias")) and geom.H * geom.W == 1


def gradient_layout(grad, geom):
    """The output gradient (positions, out) as the 1x1 conv's (out, positions)."""
    return grad.reshape(-1, geom.F).T


KINDS = (
    LayerKind("linear", "linear", PARAMETRIC, modules=(nn.Linear,), functions=(F.linear,),
              aten=("aten.linear",), params=_params, geometry=geometry, leak_source=leak_source,
              gradient_layout=gradient_layout,
              weight_params=lambda shape: {"out_features": shape[0], "in_features": shape[1]},
              why="gradient rows determine the input once g is known; a bias exposes g directly"),
)
