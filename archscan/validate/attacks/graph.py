"""The traced graph of a model as closed-form attack steps: one walk for chains and DAGs.

A chain is a DAG with one path, so both are read the same way.  :func:`walk` traces the model with
the trace scan uses (:mod:`archscan.model.fxgraph`) and turns every tensor operation into a
:class:`Node` -- a :class:`~.steps.Step` of the shared layer vocabulary (:func:`~.vocabulary.op_step`)
plus the nodes it reads -- under a *link* rule: the chain's (every op reads the previous one and
nothing else) or the DAG's (one input per op, ``torch.cat`` joins branches).  :func:`shaped` gives
every step its shapes from a probe image, :func:`locate_head` finds the Linear head and
:func:`reproduces` checks the structure's own forward (:func:`apply_step`) against the model.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import nn

from archscan.model.fxgraph import propagate, trace
from archscan.validate.attacks.activations import act_forward
from archscan.validate.attacks.steps import Step

PARAMETRIC = ("conv", "linear")
BRANCH_FNS = {operator.add: "residual add", torch.add: "residual add", torch.cat: "concatenation",
              operator.mul: "multiplicative branch", torch.stack: "concatenation"}


@dataclass
class Node:
    """One tensor operation: a :class:`Step` plus the indices of the nodes it reads.

    ``inputs`` index the walk's node list; ``-1`` is the image.  ``cat_dim`` is the concatenation
    dimension of a ``"cat"`` step (batch dimension excluded).
    """

    step: Step
    inputs: list = field(default_factory=list)
    cat_dim: int = 0


def call_arg(node, index: int, key: str, default):
    """Positional-or-keyword argument of a traced call."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(key, default)


def is_shape_query(node, shape_nodes: set) -> bool:
    """True for nodes that only compute sizes (``x.size(0)``, ``x.shape[1]``), not tensors."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr:
        return True
    inputs = node.all_input_nodes
    return bool(inputs) and all(n in shape_nodes for n in inputs) and node.op != "output"


def walk(model: nn.Module, link, end):
    """Trace ``model`` into ``(graph module, nodes, output index)``, or the reason it cannot.

    ``link(node, gm, index_of, shape_nodes)`` makes the :class:`Node` of one traced tensor
    operation (or says why not); ``index_of`` maps the traced nodes seen so far to their index,
    the image first (``-1``).  ``end(output, index_of)`` says why the traced output does not fit
    (None when it does).  Size queries (``x.view(x.size(0), -1)``) are skipped.
    """
    try:
        gm = trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "not a static graph"
        return f"not traceable by torch.fx ({type(exc).__name__})"
    nodes, index_of, shape_nodes = [], {}, set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if index_of:
                return "more than one input"
            index_of[node] = -1
            continue
        if node.op == "output":
            out = node.args[0]
            return end(out, index_of) or (gm, nodes, index_of[out])
        if is_shape_query(node, shape_nodes):
            shape_nodes.add(node)
            continue
        made = link(node, gm, index_of, shape_nodes)
        if isinstance(made, str):
            return made
        made.step.node = node
        index_of[node] = len(nodes)
        nodes.append(made)
    return "no output node"


def probe_image(model: nn.Module, input_shape: tuple) -> torch.Tensor:
    """A fixed random image on the model's device and dtype, to check a traced structure."""
    ref = next(model.parameters())
    return torch.rand((1, *input_shape), generator=torch.Generator(ref.device).manual_seed(7),
                      device=ref.device, dtype=ref.dtype)


def shaped(model: nn.Module, input_shape: tuple, walked):
    """Shapes for a :func:`walk`'s nodes from :func:`probe_image`: ``(nodes, output index, probe)``.

    A reason (the walk's) passes through unchanged.
    """
    if isinstance(walked, str):
        return walked
    gm, nodes, out = walked
    probe = probe_image(model, input_shape)
    propagate(gm, probe)
    for n in nodes:
        n.step.out_shape = tuple(n.step.node.meta["tensor_meta"].shape[1:])
        n.step.in_shape = tuple(input_shape) if n.inputs[0] < 0 else nodes[n.inputs[0]].step.out_shape
    return nodes, out, probe


def locate_head(steps: list):
    """Index of the Linear head (the last layer with parameters), or why there is none."""
    params = [i for i, s in enumerate(steps) if s.kind in PARAMETRIC]
    if not params or steps[params[-1]].kind != "linear":
        return "the last layer with parameters is not a Linear classifier head"
    return params[-1]


def apply_step(step: Step, x: torch.Tensor) -> torch.Tensor:
    """Forward a batch through one single-input step (the structure's own reading of the op)."""
    if step.kind in PARAMETRIC:
        return step.module(x)
    if step.kind == "reshape":
        return x.reshape(x.shape[0], *step.out_shape)
    return act_forward(step, x)


def reproduces(forward, model: nn.Module, probe: torch.Tensor) -> bool:
    """True when ``forward`` (a traced structure's own forward) equals ``model`` on ``probe``."""
    with torch.no_grad():
        return torch.allclose(forward(probe), model(probe), rtol=1e-6, atol=1e-9)
