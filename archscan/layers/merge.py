"""Residual sums, elementwise products and concatenation.  A sum u = x + h gives x = u - h once h
is known (the skip raises the attacker's rank); a product u = x * h gives x = u / h once h is known
(layer scale, squeeze-excitation gates); a concatenation passes each part's values and gradients."""
import operator

import torch
from torch import fx

from archscan.layers.base import LayerKind
from archscan.layers.flow import ADD, CAT, PRODUCT


def _operands(module, args, kwargs) -> dict:
    """How many tensor operands the call has (``x * x`` has two, over one input tensor)."""
    return {"operands": sum(isinstance(a, fx.Node) for a in (*args, *kwargs.values()))}


KINDS = (
    LayerKind("add", "merge", ADD, functions=(operator.add, operator.iadd, torch.add), methods=("add",),
              aten=("aten.add",), attack_why="a branch: R-GAP's chain attack stops there (the DAG attack takes concatenations only)"),
    LayerKind("product", "merge", PRODUCT, functions=(operator.mul, operator.imul, torch.mul, operator.truediv,
                                                      operator.itruediv, torch.div, torch.true_divide),
              methods=("mul", "div", "true_divide"), aten=("aten.mul", "aten.div"), params=_operands,
              attack_why="an elementwise product: the closed-form attacks do not step through it"),
    LayerKind("cat", "merge", CAT, functions=(torch.cat, torch.concat), aten=("aten.cat",),
              attack_why="a branch: the chain attack stops there; the DAG attack stacks the readers' rows"),
)
