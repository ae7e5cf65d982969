"""Attention: softmax, the product of two activations, and scaled dot-product attention.

The projections of an attention block (q, k, v, out) are Linears applied at every token and
belong to the linear family; ``nn.MultiheadAttention`` is traced through into them
(``archscan.model.fxgraph``).  What is left are the three value-only ops below, each with the
flow theory.md derives for it: softmax loses one direction per row; a product of activations
gives either factor from the other (while the other has full rank); attention gives v once q and
k are known.  None of them has a closed-form attack step.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from archscan.layers.base import LayerKind, arg, is_parameter
from archscan.layers.flow import ATTENTION, MATMUL, SOFTMAX

_WHY = "attention: the closed-form attacks take Linear, conv and elementwise steps only"


def _softmax(m, args, kwargs):
    dim = m.dim if m is not None else arg(args, kwargs, 1, "dim")
    if dim is None:
        raise ValueError("softmax without a dim")
    return {"dim": int(dim)}


def _product(m, args, kwargs):
    """Two activations multiplied (``q @ k.transpose(-2, -1)``, ``attn @ v``); a learned right
    operand is a hand-written Linear (the linear family's ``matmul`` kind)."""
    if len(args) != 2 or is_parameter(args[1]):
        raise ValueError("a parameter on the right: a Linear written by hand")
    return {}


KINDS = (
    LayerKind("softmax", "attention", SOFTMAX, modules=(nn.Softmax,), functions=(F.softmax, torch.softmax),
              methods=("softmax",), aten=("aten._softmax", "aten.softmax"), params=_softmax, attack_why=_WHY),
    LayerKind("product_matmul", "attention", MATMUL, functions=(torch.bmm,), methods=("matmul", "bmm"),
              aten=("aten.bmm",), params=_product, otherwise="matmul", attack_why=_WHY),
    LayerKind("attention", "attention", ATTENTION, functions=(F.scaled_dot_product_attention,),
              aten=("aten.scaled_dot_product_attention", "aten._scaled_dot_product_flash_attention_for_cpu",
                    "aten._scaled_dot_product_efficient_attention", "aten._scaled_dot_product_flash_attention"),
              attack_why=_WHY),
)
