"""Residual sums and concatenation.  A sum u = x + h gives x = u - h once h is known (the skip
raises the attacker's rank); a concatenation passes each part's values and gradients."""
import operator

import torch

from archscan.layers.base import LayerKind
from archscan.layers.flow import ADD, CAT

KINDS = (
    LayerKind("add", "merge", ADD, functions=(operator.add, operator.iadd, torch.add), methods=("add",),
              aten=("aten.add",)),
    LayerKind("cat", "merge", CAT, functions=(torch.cat, torch.concat), aten=("aten.cat",)),
)
