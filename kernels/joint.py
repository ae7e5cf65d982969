"""Rank questions about several layers at once: rows of every layer reading one tensor, stacked
on the same unknowns (two branches on one image), and the largest batch a layer's gradient rows
can separate (a counting bound)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import generic_rank
from .conv_blocks import components, stack_builder
from .geometry import ConvGeometry

JOINT_DENSE_MAX = 4096   # unknowns up to which a joint rank is eliminated exactly


@dataclass(frozen=True)
class Reader:
    """One layer reading the shared tensor: its geometry, which of its rows the attacker can form
    (forward W, gradient K, or W only on a ReLU's active entries) and their rank on their own."""

    geometry: ConvGeometry
    forward: bool
    gradient: bool
    rank: int
    masked: bool = False


def joint_rank(readers: list[Reader], unknowns: int, seed: int = 0) -> tuple[int, bool]:
    """Rank of the stacked rows of ``readers``: ``(rank, exact)``.

    Exact for up to ``JOINT_DENSE_MAX`` unknowns (one random instance per reader, eliminated
    together mod p); above that, or for grouped or ReLU-masked rows, the attacker-favourable
    bound ``min(unknowns, sum of the readers' ranks)``.
    """
    hi = min(unknowns, sum(r.rank for r in readers))
    lo = max(r.rank for r in readers)
    if lo == hi:
        return hi, True
    if unknowns > JOINT_DENSE_MAX or any(r.geometry.groups != 1 or r.masked for r in readers):
        return hi, False
    builders = [stack_builder(r.geometry, r.geometry.C, r.geometry.F, r.geometry.F,
                              forward=r.forward, gradient=r.gradient) for r in readers]
    stacked = generic_rank(lambda rng, p: np.vstack([b(rng, p) for b in builders]), 2, seed, cap=hi)
    return stacked.value, True


def max_batch(geom: ConvGeometry) -> int:
    """Counting bound: gradient rows determine B inputs only if B * pixels <= rows, per tap block."""
    worst = None
    for taps, pixels in components(geom):
        b = (geom.Fg * taps.size) // pixels.size
        worst = b if worst is None else min(worst, b)
    return int(worst or 0)
