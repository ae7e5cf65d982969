"""Chain models for R-GAP: the traced graph (:mod:`.graph`) as a :class:`Step` list, shapes and checks.

A chain is ``x -> A_1 -> sigma_1 -> ... -> A_d (Linear head)`` of Conv2d / Linear layers,
element-wise activations and reshapes, every tensor node feeding exactly the next one: a DAG with
one path, walked by :func:`~.graph.walk` under the chain's link rule.  :func:`trace_chain`
classifies the traced nodes, :func:`build_chain` attaches shapes and checks that the chain's own
forward (:func:`run_steps`) reproduces the model.
"""
from __future__ import annotations

import torch
from torch import nn

from archscan.validate.attacks.graph import (
    BRANCH_FNS,
    Node,
    apply_step,
    is_shape_query,
    locate_head,
    reproduces,
    shaped,
    walk,
)
from archscan.validate.attacks.steps import Chain
from archscan.validate.attacks.vocabulary import op_step


def _link(node, gm, index_of: dict, shape_nodes: set):
    """The chain's rule: ``node`` reads the previous tensor node only, which feeds nothing else."""
    current = next(reversed(index_of))  # the last tensor node, or the image
    reason = _chain_link_reason(node, current, shape_nodes)
    step = reason or op_step(node, gm)
    return step if isinstance(step, str) else Node(step, [index_of[current]])


def _end(out, index_of: dict) -> str | None:
    return None if out is next(reversed(index_of)) else "the output is not the end of the chain"


def _chain_link_reason(node, current, shape_nodes: set) -> str | None:
    """Why ``node`` does not continue the chain from ``current`` (None if it does)."""
    if node.op == "get_attr":
        return f"{node.name} uses a parameter outside a layer"
    tensors = [n for n in node.all_input_nodes if n not in shape_nodes]
    users = [u for u in current.users if not is_shape_query(u, shape_nodes)]
    if node.target in BRANCH_FNS:
        return f"{BRANCH_FNS[node.target]} at {node.name}: not a chain"
    if tensors != [current] or len(users) > 1:
        return f"branch at {node.name} (residual, concatenation or multiple inputs): not a chain"
    return None


def trace_chain(model: nn.Module):
    """Trace ``model`` with ``torch.fx`` into ``(graph module, steps)``, or return why it is no chain.

    Every tensor node must consume exactly the previous tensor node and feed exactly one tensor
    node; size queries (``x.view(x.size(0), -1)``) are allowed on the side.
    """
    walked = walk(model, _link, _end)
    return walked if isinstance(walked, str) else (walked[0], [n.step for n in walked[1]])


def build_chain(model: nn.Module, input_shape: tuple):
    """Trace, attach shapes and check the chain reproduces ``model`` on a probe image.

    Returns
    -------
    Chain or str
        The chain, or the reason R-GAP cannot attack this model.
    """
    built = shaped(model, input_shape, walk(model, _link, _end))
    if isinstance(built, str):
        return built
    nodes, _, probe = built
    return _check_chain(Chain([n.step for n in nodes], -1, tuple(input_shape)), model, probe)


def _check_chain(chain: Chain, model: nn.Module, probe: torch.Tensor):
    """Locate the head and verify the chain's own forward equals the model's."""
    head = locate_head(chain.steps)
    if isinstance(head, str):
        return head
    chain.head = head
    after = chain.steps[chain.head + 1 :]
    if any(s.kind == "act" and s.act != "identity" for s in after):
        return "an activation follows the Linear head (logits must be the head's output)"
    if len(chain.steps[chain.head].in_shape) != 1:
        return "the Linear head must read a flat feature vector"
    same = reproduces(lambda x: run_steps(chain.steps, x), model, probe)
    return chain if same else "internal error: traced chain does not reproduce the model"


def run_steps(steps: list, x: torch.Tensor) -> torch.Tensor:
    """Forward a batch through ``steps`` (the chain's own interpretation of the model)."""
    for step in steps:
        x = apply_step(step, x)
    return x
