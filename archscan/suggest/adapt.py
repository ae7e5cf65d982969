"""Fit the layers downstream of an edit to the shapes they now receive.

Halving a conv's filters or doubling its stride changes what the next layers see.  One forward
pass of a probe image with a pre-hook on every Linear, Conv2d and BatchNorm refits each layer whose
input width no longer matches, in order: a narrower input keeps the leading slice of the layer's
weights (the channels that remain, in channel-major order), a wider one draws new weights from a
generator seeded with ``--seed`` (PyTorch's default initialisation).  Anything else that no longer
fits (a residual sum of two different shapes, a view with a fixed size) makes the edit inapplicable:
the forward pass raises and the caller records why.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def fit_downstream(model: nn.Module, input_shape, seed: int) -> None:
    """Refit ``model`` in place so that it runs on images of ``input_shape``; raises when it cannot."""
    gen = torch.Generator().manual_seed(seed)
    hooks = [m.register_forward_pre_hook(_refit(gen)) for m in model.modules() if isinstance(m, FITTED)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()


def _refit(gen):
    def hook(module, args):
        width = args[0].shape[-1] if isinstance(module, nn.Linear) else args[0].shape[1]
        if width != _width(module):
            next(fn for cls, fn in REFIT.items() if isinstance(module, cls))(module, width, gen)
    return hook


def _width(module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.Conv2d):
        return module.in_channels
    return module.num_features


def _columns(weight: torch.Tensor, width: int, gen, fan_in: int) -> torch.Tensor:
    """``weight`` with ``width`` input columns (dim 1): its leading slice, or fresh draws when wider."""
    if width <= weight.shape[1]:
        return weight.detach()[:, :width].clone()
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    shape = (weight.shape[0], width) + tuple(weight.shape[2:])
    return (torch.rand(shape, generator=gen, dtype=weight.dtype) * 2 - 1) * bound


def _linear(m: nn.Linear, width: int, gen) -> None:
    m.weight = nn.Parameter(_columns(m.weight, width, gen, width))
    m.in_features = width


def _conv(m: nn.Conv2d, width: int, gen) -> None:
    if m.groups == m.in_channels == m.out_channels:          # depthwise: it narrows with its input
        keep = min(width, m.out_channels)
        if width > m.out_channels:
            raise ValueError(f"a depthwise conv cannot widen from {m.out_channels} to {width} channels")
        m.weight = nn.Parameter(m.weight.detach()[:keep].clone())
        m.bias = None if m.bias is None else nn.Parameter(m.bias.detach()[:keep].clone())
        m.in_channels = m.out_channels = m.groups = keep
        return
    if m.groups != 1:
        raise ValueError(f"a grouped conv ({m.groups} groups) cannot take {width} input channels")
    m.weight = nn.Parameter(_columns(m.weight, width, gen, width * math.prod(m.kernel_size)))
    m.in_channels = width


def _norm(m, width: int, gen) -> None:
    if width > m.num_features:
        raise ValueError(f"a BatchNorm of {m.num_features} features cannot widen to {width}")
    for name in ("weight", "bias"):
        p = getattr(m, name)
        if p is not None:
            setattr(m, name, nn.Parameter(p.detach()[:width].clone()))
    for name in ("running_mean", "running_var"):
        b = getattr(m, name)
        if b is not None:
            setattr(m, name, b[:width].clone())
    m.num_features = width


REFIT = {nn.Linear: _linear, nn.Conv2d: _conv, nn.modules.batchnorm._BatchNorm: _norm}
FITTED = tuple(REFIT)
