"""Normalisation layers.  BatchNorm in eval mode is a known per-channel affine map: folded (values
and gradients pass).  Normalising by the sample's own statistics -- BatchNorm in train mode at batch
one, LayerNorm over each token, GroupNorm over each group -- leaves two unknowns per normalised
group (its mean and scale) that the layers below must pin down, and its derivative depends on those
statistics, so the gradient crosses only once the output is known."""
import math

from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind, arg
from archscan.layers.flow import Bijective, Flow, lose


class BatchNormFlow(Bijective):
    """Eval: a bijection.  Train (``--bn-mode train``): the input loses two directions per channel."""

    name = "batchnorm"

    def back(self, node, out, ctx):
        if not ctx.bn_train:
            return super().back(node, out, ctx)
        return lose(node, out, 2 * node.in_shapes[0][1], ctx)


def _bn(m, args, kwargs):
    if m is None:   # F.batch_norm(x, running_mean, running_var, weight, bias, training, ...)
        return {"channels": None, "train": bool(arg(args, kwargs, 5, "training", False))}
    return {"channels": m.num_features, "train": bool(m.training)}


class SampleNormFlow(Flow):
    """Normalised by the sample's own statistics: the input loses two directions per group."""

    name, value_for_gradient = "sample_norm", True

    def back(self, node, out, ctx):
        return lose(node, out, 2 * node.params.get("groups", 1), ctx) if node.inputs else []


def _layer_norm(m, args, kwargs):
    shape = m.normalized_shape if m is not None else arg(args, kwargs, 1, "normalized_shape")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    meta = getattr(args[0], "meta", {}) if args else {}
    full = meta.get("tensor_meta") or meta.get("val")
    numel = math.prod(full.shape[1:]) if full is not None and hasattr(full, "shape") else None
    return {"normalized": list(shape), "groups": numel // math.prod(shape) if numel else 1}


def _group_norm(m, args, kwargs):
    return {"groups": int(m.num_groups if m is not None else arg(args, kwargs, 1, "num_groups"))}


KINDS = (
    LayerKind("batchnorm", "norm", BatchNormFlow(), modules=(nn.BatchNorm1d, nn.BatchNorm2d), functions=(F.batch_norm,),
              aten=("aten._native_batch_norm_legit_no_training", "aten.batch_norm"), params=_bn,
              why="eval mode: known affine map; train mode: 2 unknowns per channel", attack=("affine", ())),
    LayerKind("layernorm", "norm", SampleNormFlow(), modules=(nn.LayerNorm,), functions=(F.layer_norm,),
              aten=("aten.layer_norm", "aten.native_layer_norm"), params=_layer_norm,
              attack_why="normalises by each token's own statistics: not inverted in closed form"),
    LayerKind("groupnorm", "norm", SampleNormFlow(), modules=(nn.GroupNorm,), functions=(F.group_norm,),
              aten=("aten.group_norm", "aten.native_group_norm"), params=_group_norm,
              attack_why="normalises by each group's own statistics: not inverted in closed form"),
)
