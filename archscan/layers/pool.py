"""Pooling.  Average pooling is linear; max pooling hides an arg-max pattern.  Either way the input
is known only up to (inputs - outputs) directions, and after a nonlinearity that breaks the
per-element sigma^-1 and sigma': the analytic chain stops there."""
import torch
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind
from archscan.layers.flow import POOL

_POOLS = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool1d,
          nn.MaxPool1d, nn.AdaptiveAvgPool1d)

KINDS = (
    LayerKind("pool", "pool", POOL, modules=_POOLS,
              functions=(F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.mean),
              methods=("mean",),
              aten=("aten.avg_pool2d", "aten.max_pool2d", "aten.adaptive_avg_pool2d", "aten.mean",
               "aten.max_pool2d_with_indices", "aten._adaptive_avg_pool2d"),
              attack_why="pooling breaks the element-wise chain"),
)
