"""Residual sums and concatenation.  A sum u = x + h gives x = u - h once h is known (the skip
raises the attacker's rank); a concatenation passes each part's values and gradients."""
import operator

import torch

from archscan.layers.base import LayerKind
from archscan.layers.flow import ADD, CAT

KINDS = (
    LayerKind("add", "merge", ADD, functions=(operator.add, operator.iadd, torch.add), methods=("add",),
              aten=("aten.add",), attack_why="a branch: R-GAP's chain attack stops there (the DAG attack takes concatenations only)"),
    LayerKind("cat", "merge", CAT, functions=(torch.cat, torch.concat), aten=("aten.cat",),
              attack_why="a branch: the chain attack stops there; the DAG attack stacks the readers' rows"),
)
