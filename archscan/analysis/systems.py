"""Per parametric layer: the systems W (forward), K (gradient), P (padding) and the pull-back
constraint, with exact generic ranks from archscan_kernels.  Pure data in, records out."""
from __future__ import annotations

import time
from dataclasses import dataclass

import networkx as nx
from archscan_kernels import (
    ConvGeometry,
    conv_ranks,
    max_batch,
    relu_stats,
)

from archscan.layers import REGISTRY
from archscan.model.graph import LayerNode


@dataclass(frozen=True)
class LayerSystem:
    node: LayerNode
    geometry: ConvGeometry
    ranks: object                 # archscan_kernels.ConvRanks
    leak_source: bool             # Linear with bias on one position: g observed directly
    max_batch: int                # largest batch the gradient rows can still determine (count)
    pullback_from: str | None     # the parametric layer below, whose range constrains this input
    pullback_linear: bool
    relu: object | None = None    # ReluStats when the output feeds a ReLU
    seconds: float = 0.0

    @property
    def unknowns(self) -> int:
        return self.ranks.unknowns

    @property
    def deficiency(self) -> int:
        return self.ranks.deficiency


def geometry_of(node: LayerNode) -> ConvGeometry:
    """The ConvGeometry of a parametric layer's system, as its family defines it."""
    return REGISTRY[node.kind].geometry(node)


def build_system(g: nx.DiGraph, node: LayerNode, draws: int, seed: int, relu_active: float) -> LayerSystem:
    t0 = time.perf_counter()
    geom = geometry_of(node)
    ranks = conv_ranks(geom, draws=draws, seed=seed)
    leak = REGISTRY[node.kind].leaks_input(node, geom)
    below, linear = _pullback(g, node)
    relu = relu_stats(geom, ranks, relu_active, seed=seed) if feeds_relu(g, node.name) else None
    return LayerSystem(node, geom, ranks, leak, max_batch(geom), below, linear, relu,
                       time.perf_counter() - t0)


def pullback_rows(system: LayerSystem, systems: dict) -> int:
    """outputs(i-1) - rank(A_{i-1}) when positive: the range constraint on this layer's input."""
    below = systems.get(system.pullback_from)
    if below is None:
        return 0
    return max(0, below.ranks.rows_forward - below.ranks.forward.value)


def feeds_relu(g: nx.DiGraph, name: str) -> bool:
    """True when the layer's output reaches a ReLU through bijective ops only (e.g. BatchNorm)."""
    for succ in g.successors(name):
        layer = g.nodes[succ]["layer"]
        if layer.flow.masks or (layer.flow.linear and feeds_relu(g, succ)):
            return True
    return False


def _pullback(g: nx.DiGraph, node: LayerNode) -> tuple[str | None, bool]:
    """The parametric layer directly below (through elementwise ops), and whether the path is linear."""
    linear, cur = True, node.inputs[0] if node.inputs else None
    while cur is not None:
        layer = g.nodes[cur]["layer"]
        if layer.flow.parametric:
            return layer.name, linear
        if not layer.flow.elementwise:
            return None, False
        linear = linear and layer.flow.linear
        cur = layer.inputs[0] if layer.inputs else None
    return None, False


def forward_macs(systems: dict) -> int:
    """Multiply-accumulates of one forward pass through the parametric layers (a cost proxy)."""
    return int(sum(s.geometry.F * s.geometry.Ho * s.geometry.Wo * s.geometry.Cg * s.geometry.kh * s.geometry.kw
                   for s in systems.values()))
