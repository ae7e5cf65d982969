"""Chain models for R-GAP: ``torch.fx`` tracing into :class:`Step` lists, shapes and checks.

A chain is ``x -> A_1 -> sigma_1 -> ... -> A_d (Linear head)`` of Conv2d / Linear layers,
element-wise activations and reshapes, every tensor node feeding exactly the next one.
:func:`trace_chain` classifies the traced nodes, :func:`build_chain` attaches shapes and checks
that the chain's own forward (:func:`run_steps`) reproduces the model.
"""
from __future__ import annotations

import operator

import torch
from torch import nn

from archscan.validate.attacks.activations import act_forward
from archscan.validate.attacks.steps import Chain
from archscan.validate.attacks.vocabulary import module_step, node_step

_BRANCH_FNS = {operator.add: "residual add", torch.add: "residual add", torch.cat: "concatenation",
               operator.mul: "multiplicative branch", torch.stack: "concatenation"}
def _arg(node, index: int, key: str, default):
    """Positional-or-keyword argument of a traced call."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(key, default)


def _is_shape_query(node, shape_nodes: set) -> bool:
    """True for nodes that only compute sizes (``x.size(0)``, ``x.shape[1]``), not tensors."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr:
        return True
    inputs = node.all_input_nodes
    return bool(inputs) and all(n in shape_nodes for n in inputs) and node.op != "output"


def trace_chain(model: nn.Module):
    """Trace ``model`` with ``torch.fx`` into a list of :class:`Step`, or return why it is no chain.

    Every tensor node must consume exactly the previous tensor node and feed exactly one tensor
    node; size queries (``x.view(x.size(0), -1)``) are allowed on the side.
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "not a static chain"
        return f"not traceable by torch.fx ({type(exc).__name__})"
    steps, current, shape_nodes = [], None, set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                return "more than one input"
            current = node
            continue
        if _is_shape_query(node, shape_nodes):
            shape_nodes.add(node)
            continue
        if node.op == "output":
            return (gm, steps) if node.args[0] is current else "the output is not the end of the chain"
        reason = _chain_link_reason(node, current, shape_nodes)
        step = reason or (module_step(node.target, gm.get_submodule(node.target))
                          if node.op == "call_module" else node_step(node))
        if isinstance(step, str):
            return step
        step.node, current = node, node
        steps.append(step)
    return "no output node"


def _chain_link_reason(node, current, shape_nodes: set) -> str | None:
    """Why ``node`` does not continue the chain from ``current`` (None if it does)."""
    if node.op == "get_attr":
        return f"{node.name} uses a parameter outside a layer"
    tensors = [n for n in node.all_input_nodes if n not in shape_nodes]
    users = [u for u in current.users if not _is_shape_query(u, shape_nodes)]
    if node.target in _BRANCH_FNS:
        return f"{_BRANCH_FNS[node.target]} at {node.name}: not a chain"
    if tensors != [current] or len(users) > 1:
        return f"branch at {node.name} (residual, concatenation or multiple inputs): not a chain"
    return None


def probe_image(model: nn.Module, input_shape: tuple) -> torch.Tensor:
    """A fixed random image on the model's device and dtype, to check a traced structure."""
    ref = next(model.parameters())
    return torch.rand((1, *input_shape), generator=torch.Generator(ref.device).manual_seed(7),
                      device=ref.device, dtype=ref.dtype)


def build_chain(model: nn.Module, input_shape: tuple):
    """Trace, attach shapes and check the chain reproduces ``model`` on a probe image.

    Returns
    -------
    Chain or str
        The chain, or the reason R-GAP cannot attack this model.
    """
    traced = trace_chain(model)
    if isinstance(traced, str):
        return traced
    gm, steps = traced
    probe = probe_image(model, input_shape)
    torch.fx.passes.shape_prop.ShapeProp(gm).propagate(probe)
    shape = tuple(input_shape)
    for step in steps:
        step.in_shape, step.out_shape = shape, tuple(step.node.meta["tensor_meta"].shape[1:])
        shape = step.out_shape
    return _check_chain(Chain(steps, -1, tuple(input_shape)), model, probe)


def _check_chain(chain: Chain, model: nn.Module, probe: torch.Tensor):
    """Locate the head and verify the chain's own forward equals the model's."""
    params = [i for i, s in enumerate(chain.steps) if s.kind in ("linear", "conv")]
    if not params or chain.steps[params[-1]].kind != "linear":
        return "the last layer with parameters is not a Linear classifier head"
    chain.head = params[-1]
    after = chain.steps[chain.head + 1 :]
    if any(s.kind == "act" and s.act != "identity" for s in after):
        return "an activation follows the Linear head (logits must be the head's output)"
    if len(chain.steps[chain.head].in_shape) != 1:
        return "the Linear head must read a flat feature vector"
    with torch.no_grad():
        same = torch.allclose(run_steps(chain.steps, probe), model(probe), rtol=1e-6, atol=1e-9)
    return chain if same else "internal error: traced chain does not reproduce the model"



def run_steps(steps: list, x: torch.Tensor) -> torch.Tensor:
    """Forward a batch through ``steps`` (the chain's own interpretation of the model)."""
    for step in steps:
        if step.kind in ("linear", "conv"):
            x = step.module(x)
        elif step.kind == "reshape":
            x = x.reshape(x.shape[0], *step.out_shape)
        else:
            x = act_forward(step, x)
    return x

