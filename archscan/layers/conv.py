"""Conv2d layers (stride, dilation, groups, rectangular kernels, every padding mode).

Forward rows z = W x and gradient rows dw = K x; K = I_C (x) K_c is block diagonal over input
channels, so the naive count F*C*k*k over-states its rank whenever F*k*k > H*W.  The F^2 identity
between forward and gradient rows and uncovered pixels lower the rank further.  The exact generic
ranks come from archscan_kernels.conv_ranks.
"""
from archscan_kernels import ConvGeometry
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind, arg, pair
from archscan.layers.flow import PARAMETRIC


def _module(m, args, kwargs):
    if m is None:
        return _function(args, kwargs)
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel": pair(m.kernel_size), "stride": pair(m.stride), "padding": _padding(m),
            "dilation": pair(m.dilation), "groups": m.groups, "padding_mode": m.padding_mode,
            "bias": m.bias is not None}


def _padding(m) -> tuple[int, int]:
    """Integer padding; 'valid' is 0 and 'same' (stride 1) is d(k-1)/2 on each side, the equivalent
    integer padding -- refused when d(k-1) is odd (torch then pads one side more)."""
    if not isinstance(m.padding, str):
        return pair(m.padding)
    if m.padding == "valid":
        return (0, 0)
    total = [d * (k - 1) for d, k in zip(pair(m.dilation), pair(m.kernel_size))]
    if any(t % 2 for t in total):
        raise ValueError(f"padding='same' with an even dilated kernel pads asymmetrically ({total})")
    return (total[0] // 2, total[1] // 2)


def _function(args, kwargs):
    """F.conv2d / aten.conv2d (input, weight, bias, stride, padding, dilation, groups), or
    aten.convolution (..., dilation, transposed, output_padding, groups)."""
    groups_at = 8 if len(args) == 9 else 6
    if len(args) == 9 and args[6]:
        raise ValueError("transposed convolution")
    return {"stride": pair(arg(args, kwargs, 3, "stride", 1) or 1), "padding": pair(arg(args, kwargs, 4, "padding", 0) or 0),
            "dilation": pair(arg(args, kwargs, 5, "dilation", 1) or 1),
            "groups": int(arg(args, kwargs, groups_at, "groups", 1) or 1),
            "padding_mode": "zeros", "bias": arg(args, kwargs, 2, "bias") is not None}


def geometry(node) -> ConvGeometry:
    """The system's geometry from the traced input shape and the layer's parameters."""
    shape, p = node.in_shapes[0], node.params
    if len(shape) != 4:
        raise ValueError(f"conv2d input of shape {shape}: expected N x C x H x W")
    (kh, kw), (sh, sw) = p["kernel"], p["stride"]
    (ph, pw), (dh, dw) = p["padding"], p["dilation"]
    return ConvGeometry(shape[1], shape[2], shape[3], p["out_channels"], kh, kw, sh, sw, ph, pw,
                        dh, dw, p["groups"], p["padding_mode"])


KINDS = (
    LayerKind("conv2d", "conv", PARAMETRIC, modules=(nn.Conv2d,), functions=(F.conv2d,),
              aten=("aten.conv2d", "aten.convolution"), params=_module, geometry=geometry,
              weight_params=lambda shape: {"out_channels": shape[0], "kernel": (shape[2], shape[3])},
              attack=("conv", ()), attack_why="a functional conv: the closed-form attacks need the module",
              why="exact generic rank of [W; K] from the structured rank engine"),
)
