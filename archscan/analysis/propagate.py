"""Propagate what the attacker can determine from the output down to the image (a fixpoint over
the layer graph).  Each tensor carries a value state (known / partial with deficiency d / unknown,
and whether it is known only on a ReLU's active entries) and whether its gradient is known."""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
from archscan_kernels import Reader, joint_rank

from archscan.analysis.systems import LayerSystem

KNOWN, PARTIAL, UNKNOWN = 2, 1, 0


@dataclass(frozen=True)
class Val:
    level: int = UNKNOWN
    d: int = 0                 # deficiency when PARTIAL
    masked: bool = False       # known only where a ReLU is active

    def key(self):
        return (self.level, -self.d, not self.masked)


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


def propagate(g: nx.DiGraph, systems: dict[str, LayerSystem], bn_train: bool = False) -> State:
    """Fixpoint of the backward (output -> image) and forward (known inputs -> outputs) rules."""
    st = State()
    order = list(nx.topological_sort(g))
    for n in order:
        layer = g.nodes[n]["layer"]
        if layer.flow == "constant":
            st.val[n] = Val(KNOWN)
        sys = systems.get(n)
        st.grad[n] = bool(sys and sys.leak_source) or exposes_gradient(g, n)
    for _ in range(4 * len(order) + 4):
        changed = _backward_pass(g, order, systems, st, bn_train)
        changed |= _forward_pass(g, order, st)
        if not changed:
            break
    return st


def exposes_gradient(g, n) -> bool:
    """A learned tensor *added* to an activation of its own size (a positional embedding, a bias
    map) has exactly that activation's gradient as its own gradient: g is observed there (APRIL)."""
    layer = g.nodes[n]["layer"]
    if layer.flow != "add" or not layer.out_shape:
        return False
    for p in g.predecessors(n):
        src = g.nodes[p]["layer"]
        if src.flow == "constant" and src.out_shape and src.out_size == layer.out_size:
            return True
    return False


def _forward_pass(g, order, st) -> bool:
    changed = False
    for n in order:
        layer = g.nodes[n]["layer"]
        ins = [p for p in g.predecessors(n)]
        if layer.flow in ("input", "constant") or not ins:
            continue
        if all(st.val.get(p, Val()).level == KNOWN and not st.val[p].masked for p in ins):
            changed |= st.improve(n, Val(KNOWN))
    return changed


def _backward_pass(g, order, systems, st, bn_train) -> bool:
    changed = False
    for n in reversed(order):
        layer = g.nodes[n]["layer"]
        if not st.grad.get(n):
            if _grad_known(g, n, st):
                st.grad[n] = True
                changed = True
        changed |= _back_rule(g, layer, systems, st, bn_train)
        changed |= _joint(g, n, systems, st)
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
    consumers = [c for c in g.successors(n) if g.nodes[c]["layer"].flow != "ignore"
                 or g.nodes[c]["layer"].kind == "output"]
    if not consumers:
        return False
    return all(_contribution(g.nodes[c]["layer"], st) for c in consumers)


def _contribution(layer, st) -> bool:
    if layer.kind == "output":
        return True  # loss gradient: label known or inferred (iDLG)
    if not st.grad.get(layer.name):
        return False
    if layer.flow in ("invertible", "ambiguous", "relu"):
        v = st.val.get(layer.name, Val())
        return v.level == KNOWN  # sigma' is read off the output
    return True


def _back_rule(g, layer, systems, st, bn_train) -> bool:
    out = st.val.get(layer.name, Val())
    ins = list(g.predecessors(layer.name))
    via = st.via.get(layer.name)
    flow = "pool" if layer.flow == "bijective" and layer.kind == "batchnorm" and bn_train else layer.flow
    if flow == "parametric":
        return _parametric(layer, systems[layer.name], st, ins)
    if out.level == UNKNOWN or not ins:
        return False
    if flow in ("invertible", "ambiguous", "bijective", "dropout", "unsupported"):
        return any(st.improve(p, out, via) for p in ins)
    if flow == "relu":
        return st.improve(ins[0], Val(out.level, out.d, masked=out.level == KNOWN or out.masked), via)
    if flow == "pool":
        return _pool(g, layer, st, ins, out, via)
    if flow == "add":
        return _add(st, ins, out, via)
    if flow == "cat":
        return any(st.improve(p, Val(out.level, min(out.d, g.nodes[p]["layer"].out_size)), via) for p in ins)
    return False


def _pool(g, layer, st, ins, out, via) -> bool:
    n_in = g.nodes[ins[0]]["layer"].out_size
    lost = 2 * layer.in_shapes[0][1] if layer.kind == "batchnorm" else n_in - layer.out_size
    d = min(n_in, out.d + max(lost, 0))
    return st.improve(ins[0], Val(PARTIAL if d < n_in else UNKNOWN, d) if d else out, via)


def _add(st, ins, out, via) -> bool:
    changed = False
    for p in ins:
        others = [st.val.get(q, Val()) for q in ins if q != p]
        if all(o.level >= PARTIAL for o in others):
            d = out.d + sum(o.d for o in others)
            level = KNOWN if d == 0 and out.level == KNOWN and all(o.level == KNOWN for o in others) else PARTIAL
            changed |= st.improve(p, Val(level, d), via)
    return changed


def _parametric(layer, sys: LayerSystem, st, ins) -> bool:
    rank, rows = usable_rank(sys, st.val.get(layer.name, Val()), st.grad.get(layer.name, False))
    st.layer_rank[layer.name] = (rank, rows)
    if rank == 0 or not ins:
        return False
    d = sys.unknowns - rank
    v = Val(KNOWN) if d == 0 else Val(PARTIAL, d)
    return st.improve(ins[0], v, via=layer.name)


def usable_rank(sys: LayerSystem, out: Val, grad: bool) -> tuple[int, str]:
    """Rank of the rows the attacker can form: K needs g, W needs z (all of it, or active part)."""
    r = sys.ranks
    fwd = out.level >= PARTIAL
    if fwd and out.masked and sys.relu is not None:
        stack = int(sys.relu.expected_rank_hi) if grad else min(r.forward.value, int(sys.relu.active_fraction * r.rows_forward))
        return stack, "W(active)+K" if grad else "W(active)"
    if fwd and grad:
        return min(r.stack.value, r.gradient.value + max(0, r.forward.value - out.d)), "W+K"
    if grad:
        return r.gradient.value, "K"
    if fwd:
        return max(0, r.forward.value - out.d), "W"
    return 0, "-"
