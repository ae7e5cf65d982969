"""BatchNorm.  Eval mode is a known per-channel affine map: folded (values and gradients pass).
Train mode with a batch of one normalises by the sample's own statistics: two unknowns per channel
(mean and scale) that the layers below must pin down."""
from torch import nn

from archscan.layers.base import LayerKind
from archscan.layers.flow import Bijective, lose


class BatchNormFlow(Bijective):
    """Eval: a bijection.  Train (``--bn-mode train``): the input loses two directions per channel."""

    name = "batchnorm"

    def back(self, node, out, ctx):
        if not ctx.bn_train:
            return super().back(node, out, ctx)
        return lose(node, out, 2 * node.in_shapes[0][1], ctx)


def _bn(m, args, kwargs):
    return {"channels": m.num_features if m is not None else None,
            "train": bool(m.training) if m is not None else False}


KINDS = (
    LayerKind("batchnorm", "norm", BatchNormFlow(), modules=(nn.BatchNorm1d, nn.BatchNorm2d),
              aten=("aten._native_batch_norm_legit_no_training", "aten.batch_norm"), params=_bn,
              why="eval mode: known affine map; train mode: 2 unknowns per channel", attack=("affine", ())),
)
