"""How many values one forward pass produces, counted on fake tensors: shapes only, no memory, so
that a scan too large for the machine is refused before anything is allocated."""
from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


class _Count(TorchDispatchMode):
    """Sums the element counts of every op's outputs."""

    def __init__(self):
        super().__init__()
        self.values = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.values += sum(t.numel() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def activation_values(model: nn.Module, input_shape) -> int | None:
    """Values produced by one forward pass at batch 1 (parameters not counted); None when the
    model cannot run on fake tensors (then the real forward pass says what is wrong)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    counter = _Count()
    log = logging.getLogger("torch._subclasses.fake_tensor")   # it logs the failures we expect
    level, log.level = log.level, logging.CRITICAL
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), counter, torch.no_grad():
            model.eval()(torch.empty(1, *input_shape))
    except Exception:   # data-dependent code, numpy calls, a wrong shape...: no estimate, not an error
        return None
    finally:
        log.setLevel(level)
    return counter.values
