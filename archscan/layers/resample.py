"""Interpolation: ``nn.Upsample`` and ``F.interpolate`` (nearest, bilinear, bicubic).

A fixed linear map of the values, so the gradient crosses it without any value knowledge.
Upsampling reads every input value (nearest repeats each one, bilinear and bicubic weigh
neighbours with full column rank), so a known output gives a known input; downsampling keeps
fewer values than it reads and loses at most (inputs − outputs) directions, like a pool.
"""
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind
from archscan.layers.flow import UNKNOWN, Flow, lose


class Resample(Flow):
    name = "resample"

    def back(self, node, out, ctx):
        if out.level == UNKNOWN or not node.inputs:
            return []
        lost = ctx.size(node.inputs[0]) - node.out_size
        return lose(node, out, lost, ctx) if lost > 0 else [(node.inputs[0], out)]


RESAMPLE = Resample()

KINDS = (
    LayerKind("resample", "shape", RESAMPLE,
              modules=(nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d),
              functions=(F.interpolate,),
              aten=("aten.upsample_nearest2d", "aten.upsample_bilinear2d", "aten.upsample_bicubic2d",
                    "aten._upsample_nearest_exact2d", "aten._upsample_bilinear2d_aa"),
              attack_why="a fixed interpolation: the closed-form attacks take reshapes only"),
)
