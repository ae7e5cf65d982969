"""Rank mod p of a *banded* matrix (a conv's forward operator with rows and columns in spatial
order), by Gaussian elimination that only touches each pivot's nonzero span.

Rows wait in buckets keyed by their leading column.  Eliminating column j takes the bucket's row
with the shortest span as the pivot, subtracts it from the bucket's other rows over the pivot's
span only, and moves each reduced row to the bucket of its new leading column.  For a conv's W
with rows ordered (u, v, f) and columns (h, w, c) a row's span is about (kh - 1) * W * C, and
fill-in never extends a row past the spans of the rows above it, so the work is about
rows x span x (reductions per row) instead of the dense rows x cols x rank.  Dense rows (a
gradient block placed last) are allowed: they are reduced by short pivots at the cost of the
pivot's span, and only become pivots when no short row leads at a column.

Reductions are *delayed*: entries are integers in float64, an update subtracts f * a with f, a in
[0, p), so a row can take ``_delay(p)`` updates before any entry can leave the exactly
representable range; only then (or when it becomes a pivot) is it reduced mod p.  The inner loop
is then a plain multiply-subtract that vectorises.
"""
from __future__ import annotations

import numpy as np

from .config import njit
from .gfp import inverse_mod, reduce_mod

_EXACT = 2.0 ** 53


def _delay(p: int) -> int:
    """Updates a row can take before it must be reduced (|entry| < k p^2 + p <= 2^53)."""
    return max(1, int((_EXACT - p) // (float(p) * p)) - 1)


@njit
def _lead(A, i, start, stop, p, pinv):
    """First column in [start, stop) whose entry is nonzero mod p (entries reduced on the way)."""
    for c in range(start, stop):
        x = A[i, c]
        if x != 0.0:
            x = reduce_mod(x, p, pinv)
            A[i, c] = x
            if x != 0.0:
                return c
    return -1


@njit
def _reduce_row(A, i, start, stop, p, pinv):
    for c in range(start, stop):
        A[i, c] = reduce_mod(A[i, c], p, pinv)


@njit
def _take_pivot(head, nxt, last, j):
    """Unlink and return the row of bucket j with the smallest last column."""
    best, prev_best, prev, r = head[j], -1, -1, head[j]
    while r >= 0:
        if last[r] < last[best]:
            best, prev_best = r, prev
        prev, r = r, nxt[r]
    if prev_best < 0:
        head[j] = nxt[best]
    else:
        nxt[prev_best] = nxt[best]
    return best


@njit
def _bucket_rows(A, head, nxt, last, p, pinv):
    m, n = A.shape
    for i in range(m - 1, -1, -1):
        for c in range(n - 1, -1, -1):
            if A[i, c] != 0.0:
                last[i] = c
                break
        lead = _lead(A, i, 0, n, p, pinv)
        if lead >= 0:
            nxt[i] = head[lead]
            head[lead] = i


@njit
def _banded_rank(A, p, delay, cap):
    m, n = A.shape
    pinv = 1.0 / p
    head = np.full(n, -1, np.int64)
    nxt = np.full(m, -1, np.int64)
    last = np.zeros(m, np.int64)
    updates = np.zeros(m, np.int64)
    _bucket_rows(A, head, nxt, last, p, pinv)
    rank = 0
    for j in range(n):
        if head[j] < 0:
            continue
        piv = _take_pivot(head, nxt, last, j)
        rank += 1
        if rank >= cap:
            break
        stop = last[piv] + 1
        _reduce_row(A, piv, j, stop, p, pinv)
        inv = inverse_mod(A[piv, j], p)
        while head[j] >= 0:
            r = head[j]
            head[j] = nxt[r]
            f = reduce_mod(A[r, j] * inv, p, pinv)  # A[r, j] was reduced when found as the lead
            A[r, j] = 0.0
            for c in range(j + 1, stop):
                A[r, c] -= f * A[piv, c]
            if stop - 1 > last[r]:
                last[r] = stop - 1
            updates[r] += 1
            if updates[r] >= delay:
                _reduce_row(A, r, j + 1, last[r] + 1, p, pinv)
                updates[r] = 0
            lead = _lead(A, r, j + 1, last[r] + 1, p, pinv)
            if lead >= 0:
                nxt[r] = head[lead]
                head[lead] = r
    return rank


def banded_rank_mod_p(A: np.ndarray, p: int, cap: int | None = None) -> int:
    """Rank mod p of an integer-valued float64 matrix, |entries| < 2^52 (A is consumed).

    Exact for any matrix; fast when most rows are short and sorted by leading column.  With
    ``cap`` the elimination stops as soon as the rank reaches it.
    """
    A = np.ascontiguousarray(A, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"banded_rank_mod_p needs a 2-D matrix, got shape {A.shape}")
    if not 2 <= p < 2 ** 21:
        raise ValueError(f"banded_rank_mod_p needs a prime 2 <= p < 2^21, got {p}")
    limit = min(A.shape) if cap is None else min(min(A.shape), int(cap))
    if limit <= 0:
        return 0
    _reduce_matrix(A, float(p))
    return int(_banded_rank(A, float(p), _delay(p), limit))


@njit
def _reduce_matrix(A, p):
    pinv = 1.0 / p
    for i in range(A.shape[0]):
        _reduce_row(A, i, 0, A.shape[1], p, pinv)
