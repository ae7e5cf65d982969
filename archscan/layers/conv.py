"""Conv2d layers (stride, dilation, groups, rectangular kernels, every padding mode).

Forward rows z = W x and gradient rows dw = K x; K = I_C (x) K_c is block diagonal over input
channels, so the naive count F*C*k*k over-states its rank whenever F*k*k > H*W.  The F^2 identity
between forward and gradient rows and uncovered pixels lower the rank further.  The exact generic
ranks come from archscan_kernels.conv_ranks.
"""
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import Rule, arg, pair


def _module(m, args, kwargs):
    if m is None:
        return _function(args, kwargs)
    if isinstance(m.padding, str):
        raise ValueError(f"padding={m.padding!r} strings are resolved from shapes; use integers")
    return {"in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel": pair(m.kernel_size), "stride": pair(m.stride), "padding": pair(m.padding),
            "dilation": pair(m.dilation), "groups": m.groups, "padding_mode": m.padding_mode,
            "bias": m.bias is not None}


def _function(args, kwargs):
    return {"stride": pair(arg(args, kwargs, 3, "stride", 1)), "padding": pair(arg(args, kwargs, 4, "padding", 0)),
            "dilation": pair(arg(args, kwargs, 5, "dilation", 1)), "groups": int(arg(args, kwargs, 6, "groups", 1)),
            "padding_mode": "zeros", "bias": arg(args, kwargs, 2, "bias") is not None}


RULES = (
    Rule("conv2d", "conv", "parametric", modules=(nn.Conv2d,), functions=(F.conv2d,),
         aten=("aten.conv2d", "aten.convolution"), params=_module,
         why="exact generic rank of [W; K] from the structured rank engine"),
)
