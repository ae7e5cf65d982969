"""Model-level scores (definitions in docs/scores.md), pure functions of the layer records."""
from __future__ import annotations

import numpy as np
from archscan_kernels import forward_matrix, gradient_matrix

from archscan import config
from archscan.analysis.prior import prior_images
from archscan.analysis.propagate import KNOWN, UNKNOWN, Val


def copa_index(deficiencies: list[int]) -> int:
    """Chen & Campbell: sum_{i<L-1} round(-d_i (L-1-i)/(L-1)); the head (last) is excluded."""
    L = len(deficiencies)
    if L < 2:
        return 0
    return int(sum(round(-d * (L - 1 - i) / (L - 1)) for i, d in enumerate(deficiencies[:-1])))


def ra_index(layers: list[tuple[int, int, int]]) -> int:
    """R-GAP-style count over (n_x, n_w, n_z) in forward order; > 0: some layer under-determined.

    RA_l = n_x - n_w - n_z; virtual constraints from over-complete layers are carried to later
    layers: n_v += max(max(n_z - n_x, 0) - max(RA_l, 0), 0); RA-i = max_l (RA_l - n_v).
    """
    n_v, best = 0, None
    for n_x, n_w, n_z in layers:
        ra = n_x - n_w - n_z
        best = ra - n_v if best is None else max(best, ra - n_v)
        n_v += max(max(n_z - n_x, 0) - max(ra, 0), 0)
    return int(best if best is not None else 0)


def verdict(score: float) -> str:
    if score >= config.VERDICT_LEAKS:
        return "LEAKS"
    return "PARTIAL" if score >= config.VERDICT_PARTIAL else "RESISTANT"


def null_energy(image: Val, system, rows: str, X: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """Per-image ||P_null x||^2 for the image's state, and how it was computed."""
    energy = (X ** 2).sum(axis=1)
    if image.level == KNOWN:
        return np.zeros(len(X)), "determined"
    if image.level == UNKNOWN:
        return energy, "blocked: the estimate is the prior mean"
    if system is None:
        return energy * image.d / X.shape[1], "isotropic approximation d/n (no single determining layer)"
    n = X.shape[1]
    if n <= config.DENSE_PROJECTOR_MAX:
        N = _null_basis(system, rows, seed)
        extra = max(0, image.d - N.shape[1])  # directions lost to partial knowledge above
        lost = ((X @ N) ** 2).sum(axis=1) + energy * extra / n
        return lost, f"dense null space ({N.shape[1]} directions) + isotropic share of {extra} more"
    return energy * image.d / n, "isotropic approximation d/n (layer too large for a dense projector)"


def _null_basis(system, rows: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    geom = system.geometry
    parts = []
    if "W" in rows:
        parts.append(forward_matrix(geom, rng.standard_normal((geom.F, geom.Cg, geom.kh, geom.kw))))
    if "K" in rows:
        parts.append(gradient_matrix(geom, rng.standard_normal((geom.F, geom.Ho, geom.Wo))))
    U = np.vstack(parts)
    evals, evecs = np.linalg.eigh(U.T @ U)  # n x n Gram: cheaper than an SVD of the tall U
    tol = max(evals.max(), 1.0) * U.shape[0] * np.finfo(float).eps * 10
    return evecs[:, evals <= tol]


def prior_sample(shape, seed: int) -> np.ndarray:
    """Prior images centred on their mean: the attacker fills what the gradients do not determine
    with the natural-image mean (as every attack that starts from mid-grey does), so the expected
    error is tr(P_null Sigma) -- the first term of theory.md's E||P_null x||^2."""
    X = prior_images(tuple(shape), config.PRIOR_IMAGES, seed)
    return X - X.mean(axis=0, keepdims=True)


def _quality(lost: np.ndarray, X: np.ndarray, how: str) -> dict:
    score = float(np.clip(1.0 - lost.sum() / (X ** 2).sum(), 0.0, 1.0))
    mse = float(lost.mean() / X.shape[1])
    psnr = config.PSNR_CAP if mse <= 10 ** (-config.PSNR_CAP / 10) else float(-10 * np.log10(mse))
    return {"leakage_score": round(score, 6), "predicted_mse": mse, "predicted_psnr": round(psnr, 3),
            "prediction_method": how, "prior_images": int(X.shape[0])}


def predicted_quality(image: Val, system, rows: str, shape, seed: int) -> dict:
    """Leakage score (share of image variance determined) and predicted PSNR of the least-squares
    reconstruction with the prior mean in the null space."""
    X = prior_sample(shape, seed)
    lost, how = null_energy(image, system, rows, X, seed)
    return _quality(lost, X, how)


def local_quality(result, shape, seed: int) -> dict:
    """Leakage score and predicted PSNR from the Jacobian's weak directions (analysis/local.py)."""
    X = prior_sample(shape, seed)
    lost = ((X @ result.weak_basis) ** 2).sum(axis=1)
    return _quality(lost, X, f"local identifiability: {result.weak_basis.shape[1]} directions below "
                             f"tau * sigma_max of d(gradients)/d(image)")
