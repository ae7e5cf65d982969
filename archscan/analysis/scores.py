"""Model-level scores (definitions in docs/scores.md), pure functions of the layer records."""
from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from archscan_kernels import forward_matrix, gradient_matrix

from archscan import config
from archscan.analysis.prior import prior_images
from archscan.analysis.propagate import KNOWN, UNKNOWN, Val
from archscan.analysis.verdict import ChainView, Quality


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


def null_energy(image: Val, system, rows: str, X: np.ndarray, seed: int, rank: int | None = None) -> tuple[np.ndarray, str]:
    """Per-image ||P_null x||^2 for the image's state, and how it was computed."""
    energy = (X ** 2).sum(axis=1)
    if image.level == KNOWN:
        return np.zeros(len(X)), "determined"
    if image.level == UNKNOWN:
        return energy, "blocked: the estimate is the prior mean"
    if system is None or system.unknowns != X.shape[1]:
        # no single layer reading the image itself (e.g. pooling before the first layer)
        return energy * image.d / X.shape[1], "isotropic approximation d/n (no single layer reads the image)"
    n = X.shape[1]
    if n <= config.DENSE_PROJECTOR_MAX:
        N = null_basis(system, rows, seed, rank)
        extra = max(0, image.d - N.shape[1])  # directions lost to partial knowledge above
        lost = ((X @ N) ** 2).sum(axis=1) + energy * extra / n
        return lost, f"dense null space ({N.shape[1]} directions) + isotropic share of {extra} more"
    return energy * image.d / n, "isotropic approximation d/n (layer too large for a dense projector)"


NULL_MARGIN = 8   # eigenpairs computed beyond the exact null dimension, to see the gap above it


def null_basis(system, rows: str, seed: int, rank: int | None = None) -> np.ndarray:
    """Orthonormal basis of the null space of the layer's rows (W and/or K at random values).

    With the exact rank (from the rank engine) only the d + NULL_MARGIN smallest eigenpairs of the
    Gram matrix are computed (LAPACK's subset solver): no full set of eigenvectors, 3-5x faster on
    a 3072-unknown first layer.  The full eigendecomposition is the reference and the fallback."""
    if rank is not None and rank >= system.unknowns:
        return np.zeros((system.unknowns, 0))   # full column rank (exact): no null direction
    U = _rows(system, rows, seed)
    G = U.T @ U   # n x n Gram: cheaper than an SVD of the tall U
    n = G.shape[0]
    tol_of = lambda top: max(top, 1.0) * U.shape[0] * np.finfo(float).eps * 10   # noqa: E731
    if rank is not None and n - rank + NULL_MARGIN < n // 2:
        top = float(scipy.sparse.linalg.eigsh(G, k=1, which="LA", tol=1e-6, return_eigenvectors=False,
                                              v0=np.ones(n))[0])   # the largest eigenvalue, for the tolerance
        evals, evecs = scipy.linalg.eigh(G, subset_by_index=[0, n - rank + NULL_MARGIN - 1], driver="evr")
        keep = evals <= tol_of(top)
        if not keep.all():   # the gap above the null space is inside the subset: done
            return evecs[:, keep]
    evals, evecs = np.linalg.eigh(G)
    return evecs[:, evals <= tol_of(evals.max())]


def _rows(system, rows: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    geom = system.geometry
    parts = []
    if "W" in rows:
        parts.append(forward_matrix(geom, rng.standard_normal((geom.F, geom.Cg, geom.kh, geom.kw))))
    if "K" in rows:
        parts.append(gradient_matrix(geom, rng.standard_normal((geom.F, geom.Ho, geom.Wo))))
    return np.vstack(parts)


def prior_sample(shape, seed: int) -> np.ndarray:
    """Prior images centred on their mean: the attacker fills what the gradients do not determine
    with the natural-image mean (as every attack that starts from mid-grey does), so the expected
    error is tr(P_null Sigma) -- the first term of theory.md's E||P_null x||^2."""
    X = prior_images(tuple(shape), config.PRIOR_IMAGES, seed)
    return X - X.mean(axis=0, keepdims=True)


def quality_of(lost: np.ndarray, X: np.ndarray, how: str) -> Quality:
    """Leakage score 1 - E||lost||^2 / E||x - mu||^2 and the PSNR of MSE = E||lost||^2 / n."""
    score = float(np.clip(1.0 - lost.sum() / (X ** 2).sum(), 0.0, 1.0))
    mse = float(lost.mean() / X.shape[1])
    return Quality(round(score, 6), mse, round(psnr_of(mse), 3), how, int(X.shape[0]))


def psnr_of(mse: float) -> float:
    """PSNR (peak 1) of an expected MSE, capped where float64 round-off is all that is left."""
    return config.PSNR_CAP if mse <= 10 ** (-config.PSNR_CAP / 10) else float(-10 * np.log10(mse))


def predicted_quality(image: Val, system, rows: str, shape, seed: int, rank: int | None = None) -> Quality:
    """Leakage score (share of image variance determined) and predicted PSNR of the least-squares
    reconstruction with the prior mean in the null space."""
    X = prior_sample(shape, seed)
    lost, how = null_energy(image, system, rows, X, seed, rank)
    return quality_of(lost, X, how)


def chain_view(g, systems: dict, state, shape, seed: int) -> ChainView:
    """The closed-form view: how far the chain gets and what that determines of the image."""
    name = next(n for n in nx.topological_sort(g) if g.nodes[n]["layer"].kind == "input")
    img = state.val.get(name, Val())
    via = systems.get(state.via.get(name))
    rows = state.layer_rank.get(via.node.name, (0, "-"))[1] if via else "-"
    quality = predicted_quality(img, via, rows, tuple(shape), seed, rows_rank(via, rows))
    status = "determined" if img.level == KNOWN else ("blocked" if img.level == UNKNOWN else "partial")
    deficiency = {"determined": 0, "blocked": g.nodes[name]["layer"].out_size}.get(status, img.d)
    return ChainView(quality, status, deficiency, img.masked, (via.node.module_path or via.node.name) if via else None,
                     None if img.level == KNOWN else stopped_at(g, state))


def rows_rank(system, rows: str) -> int | None:
    """The exact rank of the rows ``null_basis`` builds (all of W and/or K at random values), or
    None when the rank engine has only bounds for it.  Not the attacker's usable rank: partial
    knowledge of the layer's output is accounted for separately (``null_energy``'s isotropic share)."""
    if system is None:
        return None
    r = system.ranks
    bound = r.stack if ("W" in rows and "K" in rows) else r.forward if "W" in rows else r.gradient if "K" in rows else None
    return bound.value if bound is not None and bound.exact else None


def stopped_at(g, state) -> str | None:
    """The op nearest the image where the chain loses the value: its output is (partly) known,
    an input of it is not."""
    for n in nx.topological_sort(g):
        layer = g.nodes[n]["layer"]
        if layer.flow.seeds_known or layer.kind == "input" or state.val.get(n, Val()).level == UNKNOWN:
            continue
        if any(state.val.get(p, Val()).level == UNKNOWN and not g.nodes[p]["layer"].flow.seeds_known
               for p in g.predecessors(n)):
            return layer.module_path or layer.name
    return None
