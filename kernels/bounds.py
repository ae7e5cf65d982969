"""Rank intervals: a lower bound from an instance, an upper bound from counting."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .banded import banded_rank_mod_p
from .gfp import PRIMES
from .modp import rank_of_field


@dataclass(frozen=True)
class RankBound:
    """Generic rank known to lie in [lo, hi]; exact when lo == hi.

    ``method`` says how the figure was obtained; ``draws`` lists the ranks of independent random
    instances (mod different primes) when elimination was used, so an unlucky draw is visible.
    """

    lo: int
    hi: int
    method: str
    draws: tuple = field(default=())

    def __post_init__(self):
        if self.lo > self.hi:
            raise ValueError(f"rank bounds crossed: lo={self.lo} > hi={self.hi} ({self.method})")

    @property
    def exact(self) -> bool:
        return self.lo == self.hi

    @property
    def value(self) -> int:
        """The attacker-favourable figure: the upper bound (equal to the rank when exact)."""
        return self.hi

    def scaled(self, k: int) -> "RankBound":
        return RankBound(self.lo * k, self.hi * k, self.method, self.draws)

    def __add__(self, other: "RankBound") -> "RankBound":
        return RankBound(self.lo + other.lo, self.hi + other.hi, _join(self.method, other.method),
                         self.draws + other.draws)


def _join(a: str, b: str) -> str:
    return a if a == b else f"{a}+{b}"


def exact(r: int, method: str, draws: tuple = ()) -> RankBound:
    return RankBound(int(r), int(r), method, draws)


def generic_rank(build, draws: int = 2, seed: int = 0, cap: int | None = None,
                 banded: bool = False) -> RankBound:
    """Generic rank of a matrix family: the maximum rank over random instances mod primes.

    ``build(rng, p)`` returns one integer instance.  Every instance's rank mod p is a lower bound
    on the generic rank; it equals it with probability >= 1 - rank/p per draw.  ``cap`` (an upper
    bound known from counting) lets us stop early once a draw reaches it.  ``banded`` eliminates
    with ``banded_rank_mod_p`` (for instances built in spatial order) instead of blocked BLAS.
    """
    ranks = []
    for d in range(max(1, draws)):
        p = PRIMES[d % len(PRIMES)]
        rng = np.random.default_rng([seed, d])
        M = build(rng, p)
        ranks.append(banded_rank_mod_p(M, p, cap) if banded else rank_of_field(np.mod(M, p), p))
        if cap is not None and ranks[-1] >= cap:
            break
    r = max(ranks)
    return RankBound(r, r, "elimination mod p", tuple(ranks))


