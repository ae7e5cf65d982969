"""Activations: what the attack needs is sigma^-1 (forward rows) and sigma' from the output.

identity, tanh, sigmoid, LeakyReLU (its own slope), softplus and ELU are invertible with a
derivative that is a function of the output: the chain passes.  ReLU loses forward rows where the
output is 0 (and zeroes g there); its derivative is known from the output.  GELU and SiLU have two
pre-images for negative outputs: archscan assumes the attacker resolves them (conservative).
"""
import torch
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind, arg
from archscan.layers.flow import AMBIGUOUS, INVERTIBLE, RELU


def _leaky(m, args, kwargs):
    slope = m.negative_slope if m is not None else arg(args, kwargs, 1, "negative_slope", 0.01)
    return {"negative_slope": float(slope)}


def _softplus(m, args, kwargs):
    return {"beta": float(m.beta if m is not None else arg(args, kwargs, 1, "beta", 1.0))}


def _elu(m, args, kwargs):
    return {"alpha": float(m.alpha if m is not None else arg(args, kwargs, 1, "alpha", 1.0))}


KINDS = (
    LayerKind("tanh", "activation", INVERTIBLE, modules=(nn.Tanh,), functions=(torch.tanh, F.tanh),
              methods=("tanh",), aten=("aten.tanh",)),
    LayerKind("sigmoid", "activation", INVERTIBLE, modules=(nn.Sigmoid,),
              functions=(torch.sigmoid, F.sigmoid), methods=("sigmoid",), aten=("aten.sigmoid",)),
    LayerKind("leaky_relu", "activation", INVERTIBLE, modules=(nn.LeakyReLU,),
              functions=(F.leaky_relu,), aten=("aten.leaky_relu",), params=_leaky),
    LayerKind("softplus", "activation", INVERTIBLE, modules=(nn.Softplus,), functions=(F.softplus,),
              aten=("aten.softplus",), params=_softplus),
    LayerKind("elu", "activation", INVERTIBLE, modules=(nn.ELU,), functions=(F.elu,),
              aten=("aten.elu",), params=_elu),
    LayerKind("relu", "activation", RELU, modules=(nn.ReLU, nn.ReLU6), functions=(torch.relu, torch.relu_, F.relu, F.relu6),
              methods=("relu",), aten=("aten.relu", "aten.hardtanh")),
    LayerKind("gelu", "activation", AMBIGUOUS, modules=(nn.GELU,), functions=(F.gelu,), aten=("aten.gelu",)),
    LayerKind("silu", "activation", AMBIGUOUS, modules=(nn.SiLU,), functions=(F.silu,), aten=("aten.silu",)),
)
