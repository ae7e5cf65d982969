"""Residual sums and concatenation.  A sum u = x + h gives x = u - h once h is known (the skip
raises the attacker's rank); a concatenation passes each part's values and gradients."""
import operator

import torch

from archscan.layers.base import Rule

RULES = (
    Rule("add", "merge", "add", functions=(operator.add, operator.iadd, torch.add), methods=("add", "add_"),
         aten=("aten.add",)),
    Rule("cat", "merge", "cat", functions=(torch.cat, torch.concat), aten=("aten.cat",)),
)
