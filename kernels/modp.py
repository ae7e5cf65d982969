"""Exact rank over the prime field GF(p), for dense matrices, fast enough for thousands of columns.

Entries are stored as float64 integers in ``[0, p)`` with ``p < 2**21``: a product is below 2**42,
so a BLAS matrix product over an inner dimension of up to ``PANEL`` (128) terms stays below 2**49
and is exact in float64.  That lets the trailing update of a blocked elimination run at BLAS
speed while the panel factorisation runs in a small numba kernel.

Notes
-----
Cost for an m x n matrix of rank r: about 2*m*n*r flops in BLAS plus m*n*PANEL in numba.
The rank mod p of an integer matrix never exceeds its rank over the rationals; for a matrix
whose entries are drawn at random the two agree with probability >= 1 - r/p (Schwartz-Zippel),
so callers take the maximum over independent draws and primes (see ``generic_rank``).
The field arithmetic itself (reduction, inverses, the primes) is ``gfp``'s, shared with ``banded``.
"""
from __future__ import annotations

import numpy as np

from .config import njit
from .gfp import PRIME_LIMIT, PRIMES, inverse_mod, is_prime, reduce_mod

PANEL = 128


@njit
def _panel(P, p):
    """Row-echelon factorisation of a tall panel in place; returns (k, perm, pivot columns).

    Rows below the k-th keep the multipliers of each pivot column, as in an LU factorisation,
    so the caller can apply the same elimination to the trailing columns.
    """
    mm, nb = P.shape
    pinv = 1.0 / p
    perm = np.arange(mm)
    pivcols = np.empty(nb, np.int64)
    k = 0
    for j in range(nb):
        if k == mm:
            break
        piv = -1
        for i in range(k, mm):
            if P[i, j] != 0.0:
                piv = i
                break
        if piv < 0:
            continue
        if piv != k:
            for c in range(nb):
                t = P[k, c]
                P[k, c] = P[piv, c]
                P[piv, c] = t
            t2 = perm[k]
            perm[k] = perm[piv]
            perm[piv] = t2
        inv = inverse_mod(P[k, j], p)
        for i in range(k + 1, mm):
            f = P[i, j]
            if f != 0.0:
                f = reduce_mod(f * inv, p, pinv)
                for c in range(j + 1, nb):
                    P[i, c] = reduce_mod(P[i, c] - f * P[k, c], p, pinv)
                P[i, j] = f
        pivcols[k] = j
        k += 1
    return k, perm, pivcols


@njit
def _unit_lower_solve(L, T, p):
    """T <- L^{-1} T for unit lower-triangular L (k x k, strict part given), in place."""
    k = L.shape[0]
    pinv = 1.0 / p
    for t in range(1, k):
        for s in range(t):
            f = L[t, s]
            if f != 0.0:
                for c in range(T.shape[1]):
                    T[t, c] = reduce_mod(T[t, c] - f * T[s, c], p, pinv)


def _as_field(A, p: int) -> np.ndarray:
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"rank_mod_p needs a 2-D matrix, got shape {A.shape}")
    if not 2 < p < PRIME_LIMIT:
        raise ValueError(f"prime {p} outside (2, {PRIME_LIMIT}): float64 products would not be exact")
    if not is_prime(int(p)):
        raise ValueError(f"modulus {p} is not prime: GF(p) needs a prime")
    if np.issubdtype(A.dtype, np.unsignedinteger):
        return np.mod(A.astype(np.uint64), np.uint64(p)).astype(np.float64)
    if np.issubdtype(A.dtype, np.integer):
        return np.mod(A.astype(np.int64), p).astype(np.float64)
    B = np.asarray(A, dtype=np.float64)
    if not np.all(np.isfinite(B)) or np.any(B != np.round(B)):
        raise ValueError("rank_mod_p needs integer-valued entries")
    return np.mod(B, p)


def rank_mod_p(A, p: int = PRIMES[0]) -> int:
    """Exact rank of the integer matrix ``A`` over GF(p).

    Parameters
    ----------
    A : array_like, shape (m, n)
        Integer-valued entries (any integer or float dtype); reduced mod p first.
    p : int
        A prime below 2**21.

    Returns
    -------
    int
        rank of A mod p.
    """
    return rank_of_field(_as_field(A, p), p)


def rank_of_field(M: np.ndarray, p: int) -> int:
    """rank_mod_p for a float64 matrix already reduced to [0, p) (no checks; consumed)."""
    if M.shape[0] < M.shape[1]:
        M = np.ascontiguousarray(M.T)
    return _blocked_rank(M, float(p))


def _blocked_rank(A: np.ndarray, p: float) -> int:
    """Right-looking blocked elimination; ``A`` is consumed (it shrinks to the Schur complement)."""
    r = 0
    while A.shape[0] and A.shape[1]:
        nb = min(PANEL, A.shape[1])
        P = np.ascontiguousarray(A[:, :nb])
        k, perm, pivcols = _panel(P, p)
        r += k
        if nb == A.shape[1] or k == A.shape[0]:
            break
        A = _schur_complement(A[:, nb:], P, k, perm, pivcols[:k], p)
    return int(r)


def _schur_complement(T, P, k, perm, pivcols, p):
    """Apply the panel's elimination to the trailing columns; return the rows left to reduce."""
    T = T[perm]
    if k == 0:
        return T
    L = P[:, pivcols]
    _unit_lower_solve(np.ascontiguousarray(np.tril(L[:k], -1)), T[:k], p)
    T2 = T[k:]
    T2 -= L[k:] @ T[:k]
    np.mod(T2, p, out=T2)
    return T2


def rank_mod_p_naive(A, p: int = PRIMES[0]) -> int:
    """Slow, obviously-correct Gaussian elimination in Python integers (test reference)."""
    M = [[int(v) % p for v in row] for row in np.asarray(A).astype(np.int64).tolist()]
    rank, rows = 0, len(M)
    cols = len(M[0]) if rows else 0
    for c in range(cols):
        piv = next((i for i in range(rank, rows) if M[i][c]), None)
        if piv is None:
            continue
        M[rank], M[piv] = M[piv], M[rank]
        inv = pow(M[rank][c], p - 2, p)
        for i in range(rank + 1, rows):
            if M[i][c]:
                f = M[i][c] * inv % p
                M[i] = [(x - f * y) % p for x, y in zip(M[i], M[rank])]
        rank += 1
    return rank
