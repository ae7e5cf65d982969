"""The layer graph: one LayerNode per traced op, in a networkx DiGraph (edges = tensor flow)."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import networkx as nx

from archscan.layers.flow import Flow

OUTCOMES = ("handled", "ignored", "unsupported")


@dataclass(frozen=True)
class LayerNode:
    """A traced op as plain data (no live modules or tensors)."""

    name: str
    kind: str                  # rule kind, or "input" / "output" / "constant" / "unsupported"
    flow: Flow                 # how knowledge crosses it (archscan.layers.flow)
    op_type: str               # module class or function name, for display
    module_path: str
    inputs: tuple = ()
    in_shapes: tuple = ()
    out_shape: tuple | None = None
    params: dict = field(default_factory=dict)
    source: str | None = None
    outcome: str = "handled"
    reason: str = ""
    batch: int = 1             # the program's batch (its image input's first dimension)

    @property
    def out_size(self) -> int:
        """Entries of the output for one sample: the entries over the batch, wherever the batch
        dimension sits (a program may carry attention's tokens first, the batch second)."""
        return prod(self.out_shape) // self.batch if self.out_shape else 0

    @property
    def in_size(self) -> int:
        return prod(self.in_shapes[0]) // self.batch if self.in_shapes and self.in_shapes[0] else 0


def per_sample(shape, batch: int = 1) -> list:
    """A shape without its batch dimension: the first one of the batch's size (dimension 0 of
    every fx-traced activation; the second of a program's sequence-first attention tensors)."""
    shape = list(shape or ())
    at = next((i for i, s in enumerate(shape) if s == batch), None)
    return shape if at is None else shape[:at] + shape[at + 1:]   # None: the batch merged into a dimension


def build_graph(nodes: list[LayerNode]) -> nx.DiGraph:
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.name, layer=n)
    for n in nodes:
        for i, src in enumerate(n.inputs):
            if src in g:
                g.add_edge(src, n.name, slot=i)
    return g


def parametric_order(g: nx.DiGraph) -> list[LayerNode]:
    """Parametric layers in forward (topological) order."""
    return [g.nodes[n]["layer"] for n in nx.topological_sort(g) if g.nodes[n]["layer"].flow.parametric]
