"""A tensor read by several parametric layers: the attacker stacks all their rows on the same
unknowns.  Exact for small inputs (one random instance per consumer, eliminated together mod p);
above that, the attacker-favourable bound min(unknowns, sum of the consumers' usable ranks)."""
from __future__ import annotations

import numpy as np
from archscan_kernels import generic_rank
from archscan_kernels.conv_blocks import stack_builder

JOINT_DENSE_MAX = 4096


def _builder(system, rows: str):
    geom = system.geometry
    if geom.groups != 1:
        return None
    return stack_builder(geom, geom.C, geom.F, geom.F, forward="W" in rows, gradient="K" in rows)


def joint_rank(parts: list, unknowns: int, seed: int = 0) -> tuple[int, bool]:
    """Rank of the stacked usable rows of ``parts`` = [(system, rows, rank)]; (rank, exact)."""
    hi = min(unknowns, sum(r for _, _, r in parts))
    lo = max(r for _, _, r in parts)
    if lo == hi:
        return hi, True
    builders = [_builder(s, rows) for s, rows, _ in parts]
    if unknowns > JOINT_DENSE_MAX or any(b is None for b in builders) or any("active" in rows for _, rows, _ in parts):
        return hi, False
    stacked = generic_rank(lambda rng, p: np.vstack([b(rng, p) for b in builders]), 2, seed, cap=hi)
    return stacked.value, True
