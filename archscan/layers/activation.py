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
    return {"beta": float(m.beta if m is not None else arg(args, kwargs, 1, "beta", 1.0)),
            "threshold": float(m.threshold if m is not None else arg(args, kwargs, 2, "threshold", 20.0))}


def _elu(m, args, kwargs):
    return {"alpha": float(m.alpha if m is not None else arg(args, kwargs, 1, "alpha", 1.0))}


KINDS = (
    LayerKind("tanh", "activation", INVERTIBLE, modules=(nn.Tanh,), functions=(torch.tanh, F.tanh),
              methods=("tanh",), aten=("aten.tanh",), attack=("tanh", ())),
    LayerKind("sigmoid", "activation", INVERTIBLE, modules=(nn.Sigmoid,),
              functions=(torch.sigmoid, F.sigmoid), methods=("sigmoid",), aten=("aten.sigmoid",),
              attack=("sigmoid", ())),
    LayerKind("leaky_relu", "activation", INVERTIBLE, modules=(nn.LeakyReLU,),
              functions=(F.leaky_relu,), aten=("aten.leaky_relu",), params=_leaky,
              attack=("leaky", ("negative_slope",))),
    LayerKind("softplus", "activation", INVERTIBLE, modules=(nn.Softplus,), functions=(F.softplus,),
              aten=("aten.softplus",), params=_softplus, attack=("softplus", ("beta", "threshold"))),
    LayerKind("elu", "activation", INVERTIBLE, modules=(nn.ELU,), functions=(F.elu,),
              aten=("aten.elu",), params=_elu, attack=("elu", ("alpha",))),
    LayerKind("relu", "activation", RELU, modules=(nn.ReLU,), functions=(torch.relu, torch.relu_, F.relu),
              methods=("relu",), aten=("aten.relu",), attack=("relu", ())),
    LayerKind("relu6", "activation", RELU, modules=(nn.ReLU6, nn.Hardtanh), functions=(F.relu6, F.hardtanh),
              aten=("aten.hardtanh",), attack_why="saturates: the closed-form attacks do not invert it"),
    LayerKind("gelu", "activation", AMBIGUOUS, modules=(nn.GELU,), functions=(F.gelu,), aten=("aten.gelu",),
              attack_why="two pre-images: not invertible from its output"),
    LayerKind("silu", "activation", AMBIGUOUS, modules=(nn.SiLU,), functions=(F.silu,), aten=("aten.silu",),
              attack_why="two pre-images: not invertible from its output"),
)
