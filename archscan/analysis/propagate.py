"""Propagate what the attacker can determine from the output down to the image: a fixpoint over the
layer graph.  Each tensor carries a value state (``layers.flow.Val``) and whether its gradient is
known; every op's behaviour comes from its flow object (``archscan.layers.flow``), so nothing here
knows about any particular kind of layer."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import networkx as nx
from archscan_kernels import Reader, joint_rank

from archscan.analysis.systems import LayerSystem
from archscan.layers.flow import KNOWN, PARTIAL, UNKNOWN, Val

__all__ = ["KNOWN", "PARTIAL", "UNKNOWN", "State", "Val", "exposes_gradient", "propagate", "usable_rank"]


@dataclass
class State:
    val: dict = field(default_factory=dict)
    grad: dict = field(default_factory=dict)
    via: dict = field(default_factory=dict)       # tensor -> parametric layer that determined it
    layer_rank: dict = field(default_factory=dict)  # parametric layer -> (rank used, rows used)
    joint: dict = field(default_factory=dict)       # tensor -> (readers' ranks, (joint rank, exact))

    def improve(self, name: str, v: Val, via: str | None = None) -> bool:
        if v.key() > self.val.get(name, Val()).key():
            self.val[name] = v
            if via:
                self.via[name] = via
            return True
        return False


@dataclass
class _Context:
    """What the flows may ask (``layers.flow.Context``)."""

    g: nx.DiGraph
    systems: dict
    st: State
    bn_train: bool

    def val(self, name: str) -> Val:
        return self.st.val.get(name, Val())

    def size(self, name: str) -> int:
        return self.g.nodes[name]["layer"].out_size

    def layer(self, name: str):
        return self.g.nodes[name]["layer"]

    def consumers(self, name: str) -> list:
        return [self.g.nodes[c]["layer"] for c in self.g.successors(name)]

    def parametric_input(self, node) -> Val:
        sys = self.systems[node.name]
        rank, rows = usable_rank(sys, self.val(node.name), self.st.grad.get(node.name, False))
        self.st.layer_rank[node.name] = (rank, rows)
        if rank == 0:
            return Val()
        d = sys.unknowns - rank
        return Val(KNOWN) if d == 0 else Val(PARTIAL, d)


def propagate(g: nx.DiGraph, systems: dict[str, LayerSystem], bn_train: bool = False) -> State:
    """Fixpoint of the backward (output -> image) and forward (known inputs -> outputs) rules."""
    st = State()
    order = list(nx.topological_sort(g))
    for n in order:
        if g.nodes[n]["layer"].flow.seeds_known:
            st.val[n] = Val(KNOWN)
        sys = systems.get(n)
        st.grad[n] = bool(sys and sys.leak_source) or exposes_gradient(g, n)
    ctx = _Context(g, systems, st, bn_train)
    for _ in range(4 * len(order) + 4):
        changed = _backward_pass(ctx, order)
        changed |= _forward_pass(g, order, st)
        if not changed:
            break
    return st


def exposes_gradient(g, n) -> bool:
    """A learned tensor *added* to an activation of its own size (a positional embedding, a bias
    map) has exactly that activation's gradient as its own gradient: g is observed there (APRIL)."""
    layer = g.nodes[n]["layer"]
    if not layer.flow.sum_of_inputs or not layer.out_shape:
        return False
    for p in g.predecessors(n):
        src = g.nodes[p]["layer"]
        if src.flow.seeds_known and src.out_shape and prod(src.out_shape) == layer.out_size:  # no batch dim
            return True
    return False


def _forward_pass(g, order, st) -> bool:
    changed = False
    for n in order:
        ins = list(g.predecessors(n))
        if g.nodes[n]["layer"].flow.seeds_known or not ins:
            continue
        if all(st.val.get(p, Val()).level == KNOWN and not st.val[p].masked for p in ins):
            changed |= st.improve(n, Val(KNOWN))
    return changed


def _backward_pass(ctx: _Context, order) -> bool:
    changed = False
    g, st = ctx.g, ctx.st
    for n in reversed(order):
        layer = g.nodes[n]["layer"]
        if not st.grad.get(n) and _grad_known(g, n, st):
            st.grad[n] = changed = True
        via = layer.name if layer.flow.parametric else st.via.get(layer.name)
        for name, v in layer.flow.back(layer, ctx.val(layer.name), ctx):
            changed |= st.improve(name, v, via)
        changed |= _joint(g, n, ctx.systems, st)
    return changed


def _joint(g, n, systems, st) -> bool:
    """Stack the rows of every parametric layer reading tensor n (two branches on one image)."""
    readers = [c for c in g.successors(n) if c in systems and st.layer_rank.get(c, (0,))[0] > 0]
    if len(readers) < 2:
        return False
    unknowns = systems[readers[0]].unknowns
    key = tuple(sorted((c, st.layer_rank[c]) for c in readers))
    if st.joint.get(n, (None,))[0] != key:
        st.joint[n] = (key, joint_rank([_reader(systems[c], *st.layer_rank[c]) for c in readers], unknowns))
    rank, _exact = st.joint[n][1]
    d = unknowns - rank
    return st.improve(n, Val(KNOWN) if d == 0 else Val(PARTIAL, d), via=readers[0])


def _reader(system: LayerSystem, rank: int, rows: str) -> Reader:
    """The rows the attacker forms at a layer (``usable_rank``'s label) as a kernels Reader."""
    return Reader(system.geometry, forward="W" in rows, gradient="K" in rows, rank=rank, masked="active" in rows)


def _grad_known(g, n, st) -> bool:
    """Gradient of tensor n is known when every consumer's contribution can be formed."""
    readers = [g.nodes[c]["layer"] for c in g.successors(n)]
    consumers = [c for c in readers if c.flow.contributes_gradient]
    if not readers and g.nodes[n]["layer"].flow.unread_gradient_known:
        return True
    return bool(consumers) and all(_contribution(c, n, st) for c in consumers)


def _contribution(layer, toward: str, st) -> bool:
    """Can the attacker carry ``layer``'s output gradient to its input ``toward``?"""
    if layer.flow.is_loss:
        return True  # loss gradient: label known or inferred (iDLG)
    if not st.grad.get(layer.name):
        return False
    # e.g. sigma' read off an activation's output, or the other factor of a product
    return all(st.val.get(v, Val()).level == KNOWN for v in layer.flow.gradient_needs(layer, toward))


def usable_rank(sys: LayerSystem, out: Val, grad: bool) -> tuple[int, str]:
    """Rank of the rows the attacker can form: K needs g, W needs z (all of it, or active part).

    Output unknown along d generic directions, W's rank drops by d; unknown on d whole entries
    (``Val.aligned``: a selection read only the rest), d of W's rows are missing, so the rank is at
    most min(rank W, rows - d) -- the generic rank of the remaining rows, the attacker's figure."""
    r = sys.ranks
    fwd = out.level >= PARTIAL
    if fwd and out.masked and sys.relu is not None:
        stack = int(sys.relu.expected_rank_hi) if grad else min(r.forward.value, int(sys.relu.active_fraction * r.rows_forward))
        return stack, "W(active)+K" if grad else "W(active)"
    forward = min(r.forward.value, max(0, r.rows_forward - out.d)) if out.aligned else max(0, r.forward.value - out.d)
    if fwd and grad:
        return min(r.stack.value, r.gradient.value + forward), "W+K"
    if grad:
        return r.gradient.value, "K"
    if fwd:
        return forward, "W"
    return 0, "-"
