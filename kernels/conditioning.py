"""Numeric conditioning of a layer's stacked system for the *given* weights and gradients.

Rank is a property of the architecture (exact, generic); conditioning says how robust recovery
is to noise for particular weights.  Reported next to the rank, never instead of it.
"""
from __future__ import annotations

import numpy as np


def conditioning(U: np.ndarray, k: int = 3) -> dict:
    """One SVD: the k smallest singular values over the columns (zeros for missing rows),
    the largest, and the condition number sigma_max / sigma_min (inf when rank deficient).

    Notes
    -----
    Dense O(m n min(m, n)); callers only pass layers small enough to densify.
    """
    U = np.asarray(U, np.float64)
    if U.ndim != 2 or U.size == 0:
        raise ValueError("conditioning needs a non-empty 2-D matrix")
    s = np.linalg.svd(U, compute_uv=False)
    if U.shape[0] < U.shape[1]:
        s = np.concatenate([s, np.zeros(U.shape[1] - U.shape[0])])
    s = np.sort(s)
    smin, smax = float(s[0]), float(s[-1])
    return {"smallest": [float(v) for v in s[:k]], "sigma_min": smin, "sigma_max": smax,
            "condition": smax / smin if smin > 0 else float("inf")}


def smallest_singular_values(U: np.ndarray, k: int = 3) -> np.ndarray:
    """The k smallest singular values of a dense (small) system, ascending."""
    return np.array(conditioning(U, k)["smallest"])


def condition_number(U: np.ndarray) -> float:
    """sigma_max / sigma_min over the columns (inf when rank deficient)."""
    return conditioning(U, 1)["condition"]
