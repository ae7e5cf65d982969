"""Hard (piecewise-linear) activations of mobile networks: Hardswish and Hardsigmoid.

Hardsigmoid, clamp((x + 3) / 6, 0, 1), is ReLU6 rescaled: forward rows survive only where it is not
saturated, and its derivative (1/6 or 0) is read off the output, so it flows like ReLU.
Hardswish, x * hardsigmoid(x), has two pre-images for outputs in (-3/8, 0) and a zero region below
-3: like GELU and SiLU it is assumed resolved (attacker-favourable).
"""

from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind
from archscan.layers.flow import AMBIGUOUS, RELU

KINDS = (
    LayerKind("hardsigmoid", "hard", RELU, modules=(nn.Hardsigmoid,), functions=(F.hardsigmoid,),
              aten=("aten.hardsigmoid",), attack_why="saturates: the closed-form attacks do not invert it"),
    LayerKind("hardswish", "hard", AMBIGUOUS, modules=(nn.Hardswish,), functions=(F.hardswish,),
              aten=("aten.hardswish",), attack_why="two pre-images: not invertible from its output"),
)


