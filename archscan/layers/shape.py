"""Reshapes, permutations (roll, channel shuffle), padding, identity and dropout: maps that keep
every value (dropout at eval is the identity; at train its random mask is assumed known to the
attacker, the conservative choice), and new tensors shaped like an input (constants)."""
import torch
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind
from archscan.layers.flow import BIJECTIVE, DROPOUT, FIRST_INPUT, FRESH, IGNORE


def _pad(m, args, kwargs) -> dict:
    """The amounts (left, right, top, bottom, ...) and the mode of a padding."""
    if m is not None:
        amounts = m.padding if isinstance(m.padding, (tuple, list)) else (m.padding,) * 4
        mode = {"Reflection": "reflect", "Replication": "replicate", "Circular": "circular"}.get(
            next((k for k in ("Reflection", "Replication", "Circular") if type(m).__name__.startswith(k)), ""), "constant")
        return {"pad": tuple(int(a) for a in amounts), "mode": mode}
    amounts = args[1] if len(args) > 1 else kwargs.get("pad", ())
    mode = args[2] if len(args) > 2 and isinstance(args[2], str) else kwargs.get("mode", "constant")
    return {"pad": tuple(int(a) for a in amounts) if all(isinstance(a, int) for a in amounts) else None, "mode": mode}


KINDS = (
    LayerKind("reshape", "shape", BIJECTIVE, modules=(nn.Flatten, nn.Unflatten, nn.Identity),
              functions=(torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze),
              methods=("view", "reshape", "flatten", "unflatten", "contiguous", "squeeze", "unsqueeze", "clone",
                       "float", "double", "to"),
              aten=("aten.view", "aten.reshape", "aten.flatten", "aten.clone", "aten._unsafe_view",
                    "aten.squeeze", "aten.unsqueeze", "aten.alias", "aten.contiguous", "aten.expand",
                    "aten.detach", "aten.dropout", "aten.unflatten"), attack=("reshape", ())),
    # x.reshape_as(y), x.view_as(y), x.type_as(y): x relabelled; y lends only its shape or dtype, so
    # nothing about y's values follows from the output
    LayerKind("reshape_like", "shape", FIRST_INPUT, methods=("reshape_as", "view_as", "type_as"),
              aten=("aten.reshape_as", "aten.view_as", "aten.type_as"),
              attack=("reshape", ())),
    # x.expand(...), x.expand_as(y): x repeated along broadcast dimensions (a class token per
    # sample): every value of x appears in the output, so a known output gives x; y lends its shape
    LayerKind("expand", "shape", FIRST_INPUT, methods=("expand", "expand_as"),
              attack_why="a broadcast copy: the closed-form attacks take reshapes only"),
    LayerKind("permute", "shape", BIJECTIVE, functions=(torch.permute, torch.transpose, torch.t, torch.roll,
                                                        F.channel_shuffle),
              modules=(nn.ChannelShuffle,), methods=("permute", "transpose", "t", "roll"),
              aten=("aten.permute", "aten.transpose", "aten.t", "aten.roll", "aten.channel_shuffle"),
              attack_why="a permutation of the entries: the closed-form attacks take reshapes only"),
    # F.pad / nn.*Pad2d: every input value appears in the output (constant, reflect, replicate or
    # circular padding alike), so a known output gives the input; the gradient is a crop
    LayerKind("pad", "shape", FIRST_INPUT, functions=(F.pad, torch.constant_pad_nd),
              modules=tuple(getattr(nn, m) for m in ("ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d",
                                                     "CircularPad2d", "ConstantPad1d", "ReflectionPad1d",
                                                     "ReplicationPad1d") if hasattr(nn, m)),
              aten=("aten.pad", "aten.constant_pad_nd", "aten.reflection_pad2d", "aten.replication_pad2d",
                    "aten.reflection_pad1d", "aten.replication_pad1d"),
              params=_pad,
              attack_why="padding: the closed-form attacks take reshapes only"),
    LayerKind("dropout", "shape", DROPOUT, modules=(nn.Dropout, nn.Dropout2d, nn.AlphaDropout),
              functions=(F.dropout,), attack=("identity", ())),
    # stochastic depth / drop path: identity at eval, a random per-sample scaling at train (the mask
    # assumed known to the attacker, as for dropout)
    LayerKind("drop_path", "shape", DROPOUT, attack=("identity", ()),
              named=("torchvision.ops.stochastic_depth.stochastic_depth", "torchvision.ops.stochastic_depth.StochasticDepth",
                     "timm.layers.drop.DropPath", "timm.layers.drop.drop_path")),
    # x.new_zeros(...), torch.zeros_like(x): a constant built from x's shape and dtype (attention masks)
    LayerKind("fresh", "shape", FRESH, functions=(torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like),
              methods=("new_zeros", "new_ones", "new_full", "new_empty"),
              aten=("aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.new_empty", "aten.zeros_like",
                    "aten.ones_like", "aten.full_like", "aten.empty_like"),
              why="a new tensor of the input's shape: a constant the attacker knows",
              attack_why="a constant: nothing to invert"),
    LayerKind("shape_query", "shape", IGNORE, methods=("size", "dim", "numel"),
              functions=(getattr,), aten=("aten.sym_size", "aten.sym_numel"),
              why="returns shape metadata, not a tensor the attack reconstructs"),
)
