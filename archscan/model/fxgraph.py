"""The one torch.fx trace of a module, for scan (``trace.py``) and the closed-form attacks alike.

:func:`trace` records the module's ``forward`` with ``torch.fx`` (stack traces kept, so scan can
name the user's source line); :func:`propagate` runs ``ShapeProp`` on a probe so every node carries
its ``tensor_meta``; :func:`traced` does both.  Nothing is memoised: a trace reads the module as it
is now (its train/eval flags, its submodules), and every caller here traces a module of its own.
"""
from __future__ import annotations

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` symbolically traced (as ``torch.fx.symbolic_trace``, with stack traces recorded).

    Raises whatever torch.fx raises for a forward it cannot trace (data-dependent control flow,
    unsupported Python); callers turn that into their own message.
    """
    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    graph = tracer.trace(model)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def propagate(gm: fx.GraphModule, probe: torch.Tensor) -> fx.GraphModule:
    """Run ``gm`` on ``probe`` so every node's ``meta["tensor_meta"]`` holds its shape (and dtype)."""
    ShapeProp(gm).propagate(probe)
    return gm


def traced(model: nn.Module, probe: torch.Tensor | None = None) -> fx.GraphModule:
    """:func:`trace`, then :func:`propagate` on ``probe`` when one is given."""
    gm = trace(model)
    return gm if probe is None else propagate(gm, probe)
