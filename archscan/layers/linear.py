"""Linear layers.

dL/dW = g x^T: once g is known the gradient rows alone determine the input (rank n); with a
bias, g = dL/db is *observed*, so x = dW[j,:] / db[j] for any j with db[j] != 0 -- a leak source
that needs no label and no upper layer.  Applied to T positions (tokens), dW = G X^T and the
input is determined only while T <= out_features; the rank engine treats it as a 1x1 conv.
"""
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import Rule, arg


def _module(m, args, kwargs):
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _function(m, args, kwargs):
    w = arg(args, kwargs, 1, "weight")
    b = arg(args, kwargs, 2, "bias")
    shape = tuple(w) if isinstance(w, (tuple, list)) else None
    return {"weight_shape": shape, "bias": b is not None}


RULES = (
    Rule("linear", "linear", "parametric", modules=(nn.Linear,), functions=(F.linear,),
         aten=("aten.linear",), params=lambda m, a, k: _module(m, a, k) if m is not None else _function(m, a, k),
         why="gradient rows determine the input once g is known; a bias exposes g directly"),
)
