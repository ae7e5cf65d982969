"""Numeric conditioning of a layer's stacked system for the *given* weights and gradients.

Rank is a property of the architecture (exact, generic); conditioning says how robust recovery
is to noise for particular weights.  Reported next to the rank, never instead of it.
"""
from __future__ import annotations

import numpy as np


def smallest_singular_values(U: np.ndarray, k: int = 3) -> np.ndarray:
    """The k smallest singular values of a dense (small) system, ascending."""
    U = np.asarray(U, np.float64)
    if U.ndim != 2 or U.size == 0:
        raise ValueError("conditioning needs a non-empty 2-D matrix")
    s = np.linalg.svd(U, compute_uv=False)
    if U.shape[0] < U.shape[1]:
        s = np.concatenate([s, np.zeros(U.shape[1] - U.shape[0])])
    return np.sort(s)[:k]


def condition_number(U: np.ndarray) -> float:
    """sigma_max / sigma_min over the columns (inf when rank deficient)."""
    s = np.linalg.svd(np.asarray(U, np.float64), compute_uv=False)
    if U.shape[0] < U.shape[1] or s[-1] == 0:
        return float("inf")
    return float(s[0] / s[-1])
