"""Element-wise steps of a chain: forward, inverse and derivative expressed from the output."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from archscan.validate.attacks.steps import Step

_EPS = 1e-12  # keeps inverses of saturating activations finite on imperfect values


def _affine(step: Step, ref: torch.Tensor):
    """Scale and shift of an eval-mode BatchNorm, shaped to broadcast over ``step.in_shape``."""
    bn = step.module
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
    view = (-1,) + (1,) * (len(step.in_shape) - 1)
    return scale.to(ref).view(view), shift.to(ref).view(view)


def act_forward(step: Step, u: torch.Tensor) -> torch.Tensor:
    """Apply the element-wise step to ``u``."""
    a = step.act
    if a == "affine":
        scale, shift = _affine(step, u)
        return u * scale + shift
    table = {
        "identity": lambda: u, "relu": lambda: F.relu(u), "tanh": lambda: torch.tanh(u),
        "sigmoid": lambda: torch.sigmoid(u),
        "leaky": lambda: F.leaky_relu(u, step.params[0] if step.params else 0.01),
        "softplus": lambda: F.softplus(u, *step.params), "elu": lambda: F.elu(u, *step.params),
    }
    return table[a]()


def act_inverse(step: Step, y: torch.Tensor):
    """Pre-activation from the output: ``(u, known)`` with ``known`` False where not invertible.

    Values outside the activation's range (possible when the layer above was not recovered
    exactly) are clipped into it first, so the result stays finite.
    """
    a, p, ones = step.act, step.params, torch.ones_like(y, dtype=torch.bool)
    if a == "identity":
        return y, ones
    if a == "affine":
        scale, shift = _affine(step, y)
        return (y - shift) / scale, ones
    if a == "relu":
        return y.clamp_min(0), y > 0
    if a == "leaky":
        return torch.where(y >= 0, y, y / p[0]), ones
    if a == "tanh":
        return torch.atanh(y.clamp(-1 + _EPS, 1 - _EPS)), ones
    if a == "sigmoid":
        return torch.logit(y.clamp(_EPS, 1 - _EPS)), ones
    if a == "softplus":
        beta, threshold = p
        yc = y.clamp_min(_EPS)
        return torch.where(beta * yc > threshold, yc, torch.log(torch.expm1(beta * yc)) / beta), ones
    alpha = p[0]  # elu
    return torch.where(y >= 0, y, torch.log1p(y.clamp_min(-alpha * (1 - _EPS)) / alpha)), ones


def act_slope(step: Step, y: torch.Tensor) -> torch.Tensor:
    """Derivative ``sigma'(u)`` expressed through the output ``y = sigma(u)``."""
    a, p = step.act, step.params
    if a == "identity":
        return torch.ones_like(y)
    if a == "affine":
        return _affine(step, y)[0].expand_as(y)
    if a == "relu":
        return (y > 0).to(y.dtype)
    if a == "leaky":
        return torch.where(y >= 0, torch.ones_like(y), torch.full_like(y, p[0]))
    if a == "tanh":
        return 1 - y.clamp(-1, 1) ** 2
    if a == "sigmoid":
        yc = y.clamp(0, 1)
        return yc * (1 - yc)
    if a == "softplus":
        beta, threshold = p
        return torch.where(beta * y > threshold, torch.ones_like(y), -torch.expm1(-beta * y.clamp_min(0)))
    return torch.where(y >= 0, torch.ones_like(y), y + p[0])  # elu

