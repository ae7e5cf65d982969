"""Exact generic rank of a Conv2d layer's gradient system, using structure instead of brute force.

Strategy (each step is exact or a proven bound; see docs/kernels.md):

1. Groups are independent and alike: every figure is ``groups`` times that of one group.
2. Gradient rows: K = I_Cg (x) K_c, and K_c splits into blocks of taps that share no pixel
   (the stride's residue classes): rank(K) = Cg * sum of the blocks' ranks, each eliminated mod p.
3. Forward rows: upper bound min(live rows, covered unknowns); lower bound from a *delta witness*
   (each filter a single tap on one channel: its rows are distinct unit vectors).
4. Stack: upper bound min(covered, rank W + rank K - Fg^2) -- the Fg^2 identities
   sum_{c,a,b} w[f',c,a,b] K-row(f,c,a,b) = sum_{u,v} g[f,u,v] W-row(f',u,v) are independent
   relations when W has full row rank and Fg <= Ho*Wo; lower bound from the *grouped witness*
   (a block-diagonal kernel splitting channels and filters into gcd(Cg, Fg) blocks; its rank is a
   sum of small eliminations).
5. If the bounds meet, the rank is exact; small layers are eliminated whole; otherwise the interval
   is returned with ``exact = False`` and callers use its upper bound (attacker-favourable).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .bounds import RankBound, exact, generic_rank
from .conv_blocks import component_builder, components, stack_builder
from .geometry import ConvGeometry, live_outputs, tap_masks

DENSE_MAX_COLS = 16384         # eliminate a whole group (banded, in spatial order) up to this
DENSE_MAX_ENTRIES = 40_000_000  # many unknowns and this many matrix entries (320 MB of float64)


@dataclass(frozen=True)
class ConvRanks:
    """Ranks of one conv layer's blocks and stack (all figures for the whole layer)."""

    unknowns: int
    covered: int            # unknowns some kernel window reads
    rows_forward: int
    rows_gradient: int
    rows_padding: int
    forward: RankBound
    gradient: RankBound
    stack: RankBound
    gradient_per_channel: int  # rank(K_c), summed over groups

    @property
    def uncovered(self) -> int:
        return self.unknowns - self.covered

    @property
    def deficiency(self) -> int:
        """unknowns - rank (attacker-favourable: uses the upper bound when not exact)."""
        return self.unknowns - self.stack.value


def _fits_dense(rows: int, cols: int) -> bool:
    return cols <= DENSE_MAX_COLS and rows * cols <= DENSE_MAX_ENTRIES


def channel_gradient_rank(geom: ConvGeometry, draws: int = 2, seed: int = 0) -> RankBound:
    """rank(K_c) for one group: the sum over independent tap components.

    A component whose *delta witness* (each gradient map a single spike, placed so the spikes'
    tap footprints are disjoint) already reaches min(rows, columns) needs no elimination.
    """
    total = exact(0, "components")
    for i, (taps, pixels) in enumerate(components(geom)):
        cap = min(geom.Fg * taps.size, pixels.size)
        if _spike_witness(geom, taps, geom.Fg) >= cap:
            total = total + exact(cap, "spike witness = count")
            continue
        build = component_builder(geom, geom.Fg, taps, pixels)
        total = total + generic_rank(build, draws, seed=seed * 7919 + i, cap=cap)
    return RankBound(total.lo, total.hi, "K_c components (spike witness or elimination mod p)", total.draws)


def _spike_witness(geom: ConvGeometry, taps: np.ndarray, n_spikes: int) -> int:
    """Rank of a K_c component when each gradient map is one spike: pixels hit, all distinct.

    A spike at output (u, v) turns the rows (f, tap) into unit vectors at the pixels that tap
    reads from (u, v); spikes are placed greedily on a lattice so their footprints are disjoint.
    """
    a, b = taps // geom.kw, taps % geom.kw
    span_u = int((a.max() - a.min()) * geom.dh // geom.sh) + 1
    span_v = int((b.max() - b.min()) * geom.dw // geom.sw) + 1
    used, placed = set(), 0
    for u in range(0, geom.Ho, span_u):
        for v in range(0, geom.Wo, span_v):
            if placed == n_spikes:
                return len(used)
            foot = _footprint(geom, a, b, u, v)
            if foot is not None and not (foot & used):
                used |= foot
                placed += 1
    return len(used)


def _footprint(geom: ConvGeometry, a, b, u, v):
    h = u * geom.sh + a * geom.dh - geom.ph
    w = v * geom.sw + b * geom.dw - geom.pw
    if (h < 0).any() or (h >= geom.H).any() or (w < 0).any() or (w >= geom.W).any():
        return None
    pix = set((h * geom.W + w).tolist())
    return pix if len(pix) == a.size else None


def _delta_witness(geom: ConvGeometry, masks: np.ndarray) -> int:
    """Rank of W for one group when each filter is a single tap on one channel (lower bound)."""
    flat = masks.reshape(masks.shape[0], -1)
    per_chan = [geom.Fg // geom.Cg + (1 if c < geom.Fg % geom.Cg else 0) for c in range(geom.Cg)]
    best = {}
    total = 0
    for k in per_chan:
        if k not in best:
            best[k] = _greedy_cover(flat, k)
        total += best[k]
    return total


def _greedy_cover(flat: np.ndarray, k: int) -> int:
    covered = np.zeros(flat.shape[1], bool)
    for _ in range(min(k, flat.shape[0])):
        gain = (flat & ~covered).sum(axis=1)
        if gain.max() == 0:
            break
        covered |= flat[int(gain.argmax())]
    return int(covered.sum())


def _forward_bounds(geom: ConvGeometry, live: int, cov: int, masks) -> tuple[int, int]:
    hi = min(geom.Fg * live, geom.Cg * cov)
    return min(_delta_witness(geom, masks), hi), hi


def _grouped_witness(geom: ConvGeometry, draws: int, seed: int, cap: int,
                     gradient: bool = True) -> int:
    """Lower bound from a block-diagonal kernel: gcd(Cg, Fg) independent small systems.

    With the kernel zero outside q diagonal blocks (Cg/q channels x Fg/q filters each), W is
    block diagonal and K = I (x) K_c already is, so the instance's rank is q times one block's.
    Returns 0 (no information) when one block is too large to eliminate.
    """
    q = math.gcd(geom.Cg, geom.Fg)
    cb, fb = geom.Cg // q, geom.Fg // q
    rows = fb * geom.Ho * geom.Wo + (geom.Fg * cb * geom.kh * geom.kw if gradient else 0)
    if q == 1 or not _fits_dense(rows, cb * geom.H * geom.W):
        return 0
    build = stack_builder(geom, cb, fb, geom.Fg, gradient=gradient, spatial=True)
    # a witness only needs to be *a* lower bound: one draw suffices (a second could only raise it)
    return q * generic_rank(build, 1, seed, cap=-(-cap // q), banded=True).value


def _whole_group(geom: ConvGeometry, draws: int, seed: int, cap: int, gradient: bool = True):
    """Rank of one whole group by elimination, or None when it is too large."""
    rows = geom.Fg * geom.Ho * geom.Wo + (geom.Fg * geom.Cg * geom.kh * geom.kw if gradient else 0)
    if not _fits_dense(rows, geom.Cg * geom.H * geom.W):
        return None
    build = stack_builder(geom, geom.Cg, geom.Fg, geom.Fg, gradient=gradient, spatial=True)
    return generic_rank(build, draws, seed, cap=cap, banded=True)


def _resolve(lo: int, hi: int, lo_method: str, geom, draws, seed, gradient: bool) -> RankBound:
    """Close the interval [lo, hi]: grouped witness first, whole-group elimination last."""
    if lo < hi:
        wit = _grouped_witness(geom, draws, seed, hi, gradient)
        if wit > lo:
            lo, lo_method = wit, "grouped witness (block-diagonal kernel) mod p"
    if lo < hi:
        whole = _whole_group(geom, draws, seed + 1, hi, gradient)
        if whole is not None:
            return whole
    if lo == hi:
        return exact(lo, f"{lo_method} = counting bound")
    return RankBound(lo, hi, f"{lo_method} <= r <= counting bound")


def conv_ranks(geom: ConvGeometry, draws: int = 2, seed: int = 0) -> ConvRanks:
    """Exact (or tightly bounded) generic ranks of a conv layer's W, K and [W; K].

    Parameters
    ----------
    geom : ConvGeometry
    draws : int
        Independent random instances per elimination (mod different primes).
    seed : int

    Notes
    -----
    Cost is dominated by the K_c component eliminations, O(Fg * taps * pixels * rank) each,
    and, only when the counting bounds do not meet, one grouped-witness elimination of
    (Cg/q) * H * W unknowns with q = gcd(Cg, Fg), or of the whole group when it is small.
    """
    masks = _tap_masks_cached(geom)
    cov = int(masks.any(axis=0).sum())
    live = live_outputs(geom)
    kc = channel_gradient_rank(geom, draws, seed)
    r_K = geom.Cg * kc.value
    lo_w, hi_w = _forward_bounds(geom, live, cov, masks)
    W = _resolve(lo_w, hi_w, "delta witness", geom, draws, seed + 10, gradient=False)
    full_rows = live == geom.Ho * geom.Wo and W.lo == geom.Fg * live
    overlap = geom.Fg ** 2 if full_rows and geom.Fg <= geom.Ho * geom.Wo else 0
    hi = min(geom.Cg * cov, W.hi + r_K - overlap)
    lo = max(W.lo, r_K)
    S = _resolve(lo, hi, "max(rank W, rank K)", geom, draws, seed + 20, gradient=True)
    G = geom.groups
    return ConvRanks(
        unknowns=geom.unknowns, covered=geom.C * cov,
        rows_forward=geom.F * geom.Ho * geom.Wo, rows_gradient=geom.F * geom.Cg * geom.kh * geom.kw,
        rows_padding=geom.padded_entries(),
        forward=W.scaled(G), gradient=exact(G * r_K, kc.method, kc.draws), stack=S.scaled(G),
        gradient_per_channel=G * kc.value,
    )


@lru_cache(maxsize=64)
def _tap_masks_cached(geom: ConvGeometry) -> np.ndarray:
    return tap_masks(geom)
