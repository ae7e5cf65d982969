"""Arithmetic in the prime field GF(p), shared by the dense (``modp``) and banded eliminations.

Elements are float64 integers in ``[0, p)`` with ``p < PRIME_LIMIT = 2**21``, so the product of
two elements (< 2**42) is exact in float64 and ``reduce_mod`` brings it back to ``[0, p)``.
"""
from __future__ import annotations

import numpy as np

from .config import njit

PRIME_LIMIT = 2**21


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    k = 2
    while k * k <= n:
        if n % k == 0:
            return False
        k += 1
    return True


def primes_below(limit: int, count: int) -> tuple[int, ...]:
    """The ``count`` largest primes below ``limit``."""
    out, n = [], limit - 1
    while len(out) < count:
        if is_prime(n):
            out.append(n)
        n -= 1
    return tuple(out)


PRIMES = primes_below(PRIME_LIMIT, 3)


@njit
def reduce_mod(x, p, pinv):
    """x mod p in [0, p) for an integer-valued float64 x (|x| < 2**53); ``pinv`` is 1 / p."""
    q = np.floor(x * pinv)
    r = x - q * p
    if r < 0.0:
        r += p
    elif r >= p:
        r -= p
    return r


@njit
def inverse_mod(a, p):
    """Modular inverse by Fermat (p prime); a in [1, p)."""
    pinv = 1.0 / p
    result, base, e = 1.0, a, int(p) - 2
    while e > 0:
        if e & 1:
            result = reduce_mod(result * base, p, pinv)
        base = reduce_mod(base * base, p, pinv)
        e >>= 1
    return result


def random_field(rng: np.random.Generator, shape, p: int) -> np.ndarray:
    """Uniform random elements of GF(p) (never zero), as float64."""
    return rng.integers(1, p, size=shape).astype(np.float64)
