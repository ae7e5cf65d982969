"""ReLU layers: forward rows survive only where the output is active, and the upstream gradient
is zero where it is not.  We sample activity masks at an active fraction rho and report the
expected rank of the stacked system and the probability that the input stays determined."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import generic_rank
from .conv_blocks import stack_builder
from .conv_rank import ConvRanks
from .geometry import ConvGeometry

# Each sampled mask is eliminated exactly (banded, in spatial order) up to this many unknowns,
# matrix entries, and gradient-row entries (the dense gradient rows dominate the cost).
SAMPLE_MAX_COLS = 6144
SAMPLE_MAX_ENTRIES = 40_000_000
SAMPLE_MAX_GRADIENT_ENTRIES = 3_000_000


@dataclass(frozen=True)
class ReluStats:
    """Rank of [W_active; K_masked] over sampled masks; ``exact`` False means counting bounds."""

    active_fraction: float
    samples: int
    expected_rank_lo: float
    expected_rank_hi: float
    p_determined: float | None   # None when the bounds cannot decide it
    exact: bool


def relu_stats(geom: ConvGeometry, ranks: ConvRanks, active: float = 0.5, samples: int = 4,
               seed: int = 0) -> ReluStats:
    """Expected rank and P(determined) of a conv layer followed by ReLU at active fraction rho.

    Small layers: each sampled mask is eliminated exactly (mod p).  Large layers: the rank lies
    between rank(K) masked (>= 0) and min(covered, active forward rows + rank K); when that upper
    bound, even with every output active, is below the unknowns the layer is surely not
    determined (P = 0); otherwise P is left undecided (None) for large layers.
    """
    if not 0.0 < active <= 1.0:
        raise ValueError(f"active fraction must be in (0, 1], got {active}")
    rows = geom.F * geom.Ho * geom.Wo + geom.F * geom.Cg * geom.kh * geom.kw
    counted = _counting(geom, ranks, active)
    if counted.p_determined == 0.0 or geom.groups != 1:
        return counted
    if _fits_sampling(geom, rows):
        return _sampled_exact(geom, active, samples, seed)
    return counted


def _fits_sampling(geom: ConvGeometry, rows: int) -> bool:
    k_rows = geom.F * geom.Cg * geom.kh * geom.kw
    return (geom.unknowns <= SAMPLE_MAX_COLS and rows * geom.unknowns <= SAMPLE_MAX_ENTRIES
            and k_rows * geom.unknowns <= SAMPLE_MAX_GRADIENT_ENTRIES)


def _sampled_exact(geom, active, samples, seed) -> ReluStats:
    rng = np.random.default_rng(seed)
    ranks = []
    for s in range(samples):
        keep = rng.random((geom.F, geom.Ho, geom.Wo)) < active
        build = stack_builder(geom, geom.C, geom.F, geom.F, masks=(keep.reshape(-1), keep),
                              spatial=True)
        ranks.append(generic_rank(build, 1, seed=seed * 1000 + s, banded=True).value)
    mean = float(np.mean(ranks))
    p = float(np.mean([r == geom.unknowns for r in ranks]))
    return ReluStats(active, samples, mean, mean, p, True)


def _counting(geom, ranks: ConvRanks, active) -> ReluStats:
    """E[rank] <= min(covered, rho * forward rows + rank K) (Jensen: min is concave).  Masking only
    removes rows and zeroes entries, so when even the unmasked stack is deficient P = 0."""
    hi = min(ranks.stack.hi, ranks.covered, active * ranks.rows_forward + ranks.gradient.value)
    certain = ranks.stack.hi < geom.unknowns  # a masked system never exceeds the unmasked stack
    return ReluStats(active, 0, 0.0, float(hi), 0.0 if certain else None, False)
