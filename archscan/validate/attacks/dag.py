"""R-GAP beyond chains: parallel branches that read one tensor and meet again in ``torch.cat``.

A DAG model is walked (:func:`~.graph.walk`, as a chain is, under the DAG's link rule) into
:class:`~.graph.Node` s (the :class:`~.steps.Step` kinds plus ``"cat"``).  Every tensor other than
the logits is read either by exactly one element-wise, reshape or concatenation node, or by one or
more Conv2d / Linear layers.  The recursion goes from
the Linear head down in reverse topological order:

* below an element-wise step or reshape: as in the chain (:func:`~.recursion.descend_elementwise`);
* below a ``torch.cat``: the concatenated value, gradient and mask split into the inputs' parts;
* below a tensor read by several layers: all their rows (forward rows where their outputs are
  known, gradient rows once their output gradients are known) are stacked into one least-squares
  system on the shared unknowns (as the static analysis does, :mod:`archscan.joint`), and the
  tensor's gradient is the sum ``sum_i A_i^T g_i`` over its readers.

Residual additions and other multi-input operations stay out of scope (the reason is reported).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from archscan.validate.attacks.analytic import param_key
from archscan.validate.attacks.graph import (
    BRANCH_FNS,
    PARAMETRIC,
    Node,
    apply_step,
    call_arg,
    locate_head,
    reproduces,
    shaped,
    walk,
)
from archscan.validate.attacks.layer_system import LayerSystem, norms
from archscan.validate.attacks.recursion import (
    State,
    bias_check,
    descend_elementwise,
    layer_infos,
    start_point,
    top_state,
)
from archscan.validate.attacks.solvers import solve_system
from archscan.validate.attacks.steps import Step
from archscan.validate.attacks.vocabulary import op_step


@dataclass
class Dag:
    """A traced DAG model: nodes in topological order, the head's index and every node's readers."""

    nodes: list
    head: int
    input_shape: tuple
    users: dict = field(default_factory=dict)


class StackedSystem:
    """Rows of several layers that read the same tensor, as one system ``U x = V`` in it (K problems)."""

    def __init__(self, systems: list):
        self.systems = systems
        self.x_shape, self.g = systems[0].x_shape, systems[0].g
        self._sizes = [s.rhs_flat().shape[1] for s in systems]

    def apply(self, x):
        return torch.cat([s.apply(x) for s in self.systems], dim=1)

    def apply_t(self, r):
        parts = torch.split(r, self._sizes, dim=1)
        return sum(s.apply_t(p) for s, p in zip(self.systems, parts))

    def rhs_flat(self):
        return torch.cat([s.rhs_flat() for s in self.systems], dim=1)

    def matrix(self):
        """Explicit ``U_k`` of every problem: the readers' matrices stacked."""
        return torch.cat([s.matrix() for s in self.systems], dim=1)

    def take(self, index):
        """The system of the problems ``index`` alone."""
        return StackedSystem([s.take(index) for s in self.systems])

    @torch.no_grad()
    def residual(self, x) -> torch.Tensor:
        rhs = self.rhs_flat()
        return norms(self.apply(x) - rhs) / norms(rhs).clamp_min(1e-300)


def _cat_node(node, index_of):
    """A ``torch.cat`` of distinct traced tensors: a Node, or the reason it is not supported."""
    tensors = call_arg(node, 0, "tensors", None)
    if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, torch.fx.Node) for t in tensors):
        return f"concatenation at {node.name} of something other than traced tensors"
    if len(set(tensors)) != len(tensors) or any(t not in index_of for t in tensors):
        return f"concatenation at {node.name} repeats a tensor or reads a constant"
    dim = call_arg(node, 1, "dim", 0)
    if not isinstance(dim, int):
        return f"concatenation at {node.name} along a non-constant dimension"
    return Node(Step("cat", node.name, node=node), [index_of[t] for t in tensors], dim)


def _link(node, gm, index_of: dict, shape_nodes: set):
    """The DAG's rule: one input per op, except ``torch.cat``, which joins branches."""
    if node.op == "get_attr":
        return f"{node.name} uses a parameter outside a layer"
    if node.op == "call_function" and node.target is torch.cat:
        return _cat_node(node, index_of)
    if node.target in BRANCH_FNS:
        return f"{BRANCH_FNS[node.target]} at {node.name}: only concatenation of branches is supported"
    tensors = [n for n in node.all_input_nodes if n not in shape_nodes]
    if len(tensors) != 1 or tensors[0] not in index_of:
        return f"{node.name} reads {len(tensors)} tensors: only concatenation may join branches"
    step = op_step(node, gm)
    return step if isinstance(step, str) else Node(step, [index_of[tensors[0]]])


def _end(out, index_of: dict) -> str | None:
    single = isinstance(out, torch.fx.Node) and out in index_of and index_of[out] >= 0
    return None if single else "the output is not a single traced tensor"


def trace_dag(model: nn.Module):
    """Trace ``model`` into ``(graph module, nodes, output index)`` or the reason it cannot."""
    return walk(model, _link, _end)


def build_dag(model: nn.Module, input_shape: tuple):
    """Trace, attach shapes, check the structure and that the DAG's forward reproduces ``model``.

    Returns
    -------
    Dag or str
        The DAG, or the reason R-GAP cannot attack this model.
    """
    built = shaped(model, input_shape, trace_dag(model))
    if isinstance(built, str):
        return built
    nodes, out, probe = built
    users = {i: [] for i in range(-1, len(nodes))}
    for j, n in enumerate(nodes):
        for i in n.inputs:
            users[i].append(j)
    dag = Dag(nodes, -1, tuple(input_shape), users)
    reason = _check_structure(dag, out)
    if reason:
        return reason
    same = reproduces(lambda x: run_dag(dag, x), model, probe)
    return dag if same else "internal error: traced graph does not reproduce the model"


def _check_structure(dag: Dag, out: int) -> str | None:
    """Locate the head and check every tensor's readers fit the recursion (None if they do)."""
    head = locate_head([n.step for n in dag.nodes])
    if isinstance(head, str):
        return head
    dag.head = head
    index = out
    while index != dag.head:  # logits = head output through identities/reshapes only
        step = dag.nodes[index].step
        if index < 0 or step.kind not in ("reshape", "act") or (step.kind == "act" and step.act != "identity"):
            return "the model's output is not the Linear head's output"
        index = dag.nodes[index].inputs[0]
    if len(dag.nodes[dag.head].step.in_shape) != 1:
        return "the Linear head must read a flat feature vector"
    if len(dag.users[dag.nodes[dag.head].inputs[0]]) != 1:
        return "the Linear head's input is also read elsewhere"
    for n in dag.nodes:
        if n.step.kind == "cat" and n.cat_dim % (len(n.step.out_shape) + 1) == 0:
            return f"concatenation at {n.step.name} along the batch dimension"
    for i in range(-1, dag.head + 1):
        readers = [dag.nodes[j].step for j in dag.users[i]]
        name = "the image" if i < 0 else dag.nodes[i].step.name
        if not readers:
            if i != dag.head:
                return f"{name} is computed but not used"
            continue
        if len(readers) > 1 and not all(s.kind in PARAMETRIC for s in readers):
            return f"{name} is read by several operations that are not all Conv2d/Linear layers"
        if any(j > dag.head for j in dag.users[i]) and i != dag.head:
            return f"{name} is used after the Linear head"
    return None


def run_dag(dag: Dag, x: torch.Tensor) -> torch.Tensor:
    """Forward a batch through the DAG (its own interpretation of the model); the last node's value."""
    values = {-1: x}
    for i, n in enumerate(dag.nodes):
        inp = [values[j] for j in n.inputs]
        values[i] = torch.cat(inp, dim=n.cat_dim) if n.step.kind == "cat" else apply_step(n.step, inp[0])
    return values[len(dag.nodes) - 1]


def _split_cat(node: Node, dag: Dag, state):
    """States of the inputs of a ``torch.cat`` from the state of its output."""
    axis = node.cat_dim % (len(node.step.out_shape) + 1)  # counts the batch dimension
    sizes = [(dag.input_shape if j < 0 else dag.nodes[j].step.out_shape) for j in node.inputs]
    lengths = [s[axis - 1] for s in sizes]
    return [State(*parts) for parts in zip(torch.split(state.x, lengths, axis),
                                           torch.split(state.g, lengths, axis),
                                           torch.split(state.known, lengths, axis))]


def dag_recursion(dag: Dag, grads: dict, labels, settings: dict):
    """Run the recursion on a DAG for K problems at once (gradients stacked ``(K, ...)``, one label
    per problem): ``(images, solver iterations per problem, per-problem list of per-layer info)``."""
    with torch.no_grad():
        return _recursion(dag, grads, labels, settings)


def _recursion(dag: Dag, grads: dict, labels, settings: dict):
    head = dag.nodes[dag.head].step
    top = top_state(_HeadView(head), grads, labels)
    K = top.x.shape[0]
    states = {dag.nodes[dag.head].inputs[0]: top}  # state of each node's output value
    layers, iterations = [[] for _ in range(K)], [0] * K
    for i in reversed(range(-1, dag.head)):
        if i in states:
            continue
        readers = dag.users[i]
        if len(readers) == 1 and dag.nodes[readers[0]].step.kind not in PARAMETRIC:
            node = dag.nodes[readers[0]]
            if node.step.kind == "cat":
                for j, part in zip(node.inputs, _split_cat(node, dag, states[readers[0]])):
                    states[j] = part
            else:
                states[i] = descend_elementwise(node.step, states[readers[0]], settings["relu_tol"])
            continue
        state, infos = _solve_readers(dag, i, readers, states, grads, settings)
        states[i] = state
        for k, info in enumerate(infos):
            layers[k].append(info)
            iterations[k] += info["solver_iterations"]
    return states[-1].x.reshape(K, *dag.input_shape), iterations, layers


class _HeadView:
    """The bits of a chain :func:`~.recursion.top_state` reads, for the head of a DAG."""

    def __init__(self, head: Step):
        self.steps, self.head = [head], 0


def _solve_readers(dag: Dag, i: int, readers: list, states: dict, grads: dict, settings: dict):
    """Stack the rows of every Conv2d/Linear reading tensor ``i`` and solve for it (K problems)."""
    systems = []
    for j in readers:
        step, out = dag.nodes[j].step, states[j]
        systems.append(LayerSystem(step, out.x, out.known, out.g, grads[param_key(step.name, "weight")]))
    system = systems[0] if len(systems) == 1 else StackedSystem(systems)
    x, iters = solve_system(system, settings, start_point(system, settings["image_start"] if i < 0 else 0.0))
    g = sum(s.forward_rows_t(states[j].g, masked=False) for s, j in zip(systems, readers))
    name = "+".join(dag.nodes[j].step.name for j in readers)
    kind = "joint" if len(readers) > 1 else dag.nodes[readers[0]].step.kind
    checks = [bias_check(dag.nodes[j].step, states[j].g, grads) for j in readers]  # per reader: K
    infos = layer_infos(name, kind, math.prod(system.x_shape[1:]), iters, system.residual(x),
                        [list(per) for per in zip(*checks)])
    return State(x, g, torch.ones_like(x, dtype=torch.bool)), infos
