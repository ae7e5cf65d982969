"""Slow, obviously-correct references for the kernels (dense numpy and plain Python).

Nothing here imports ``archscan_kernels.conv_ops`` or its numba helpers: the conv operators are
built by explicit loops over (f, c, a, b, u, v) straight from the formulas of theory.md section 1,

    z[f,u,v]    = sum_{c,a,b} w[f,c,a,b] * xp[c, u*sh + a*dh, v*sw + b*dw]      (rows W)
    dw[f,c,a,b] = sum_{u,v}   g[f,u,v]   * xp[c, u*sh + a*dh, v*sw + b*dw]      (rows K)

where ``xp`` is the input padded the way torch pads it (zeros / reflect / replicate / circular).
Padding is done with ``numpy.pad`` on an image of *pixel indices* (reflect = numpy 'reflect',
replicate = 'edge', circular = 'wrap', zeros = a constant -1 meaning "no pixel"), so a padded
position maps back to the pixel it copies.

Ranks:
- ``rank_fraction``: exact rank over the rationals (``fractions.Fraction``), tiny matrices only.
- ``rank_mod_p_numpy``: Gaussian elimination mod a 31-bit prime in int64 numpy, vectorised over
  rows (a different prime and a different code path from the kernel's blocked float elimination).
- ``dense_generic_ranks``: the generic ranks of W, K and [W; K] as the maximum over random integer
  instances (Schwartz-Zippel: an instance's rank mod p never exceeds the generic rank, and equals
  it with probability >= 1 - r/p).

The geometry strategies used by the property tests live at the bottom of this file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
P31 = 2_147_483_647  # 2**31 - 1 (prime): products of two residues fit in int64


# --------------------------------------------------------------------------------------------
# Example-count scaling (ARCHSCAN_TEST_SCALE=0.05 for a NUMBA_DISABLE_JIT run)
# --------------------------------------------------------------------------------------------

def scale() -> float:
    return float(os.environ.get("ARCHSCAN_TEST_SCALE", "1"))


def n_examples(n: int) -> int:
    """``n`` scaled by ARCHSCAN_TEST_SCALE (at least 1)."""
    return max(1, int(round(n * scale())))


# --------------------------------------------------------------------------------------------
# Geometry as plain numbers (independent of archscan_kernels.geometry)
# --------------------------------------------------------------------------------------------

def as_tuple(geom) -> tuple:
    """(C,H,W,F,kh,kw,sh,sw,ph,pw,dh,dw,groups,mode) from a ConvGeometry or a tuple."""
    if isinstance(geom, tuple):
        return geom
    return (geom.C, geom.H, geom.W, geom.F, geom.kh, geom.kw, geom.sh, geom.sw, geom.ph, geom.pw,
            geom.dh, geom.dw, geom.groups, geom.padding_mode)


def out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    """torch's output size: floor((n + 2p - d(k-1) - 1)/s) + 1."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def padded_index_image(H: int, W: int, ph: int, pw: int, mode: str) -> np.ndarray:
    """(H+2ph, W+2pw) int array: the flat pixel index h*W+w each padded position reads, or -1."""
    idx = np.arange(H * W, dtype=np.int64).reshape(H, W)
    pad = ((ph, ph), (pw, pw))
    if mode == "zeros":
        return np.pad(idx, pad, mode="constant", constant_values=-1)
    return np.pad(idx, pad, mode=NUMPY_PAD_MODE[mode])


def naive_forward(geom, w: np.ndarray) -> np.ndarray:
    """Dense W (F*Ho*Wo, C*H*W) by explicit loops; dtype follows ``w`` (int or float)."""
    C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, G, mode = as_tuple(geom)
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    Cg, Fg = C // G, F // G
    xp = padded_index_image(H, W, ph, pw, mode)
    w = np.asarray(w)
    assert w.shape == (F, Cg, kh, kw)
    out = np.zeros((F * Ho * Wo, C * H * W), dtype=w.dtype)
    for f in range(F):
        for ci in range(Cg):
            c = (f // Fg) * Cg + ci
            for a in range(kh):
                for b in range(kw):
                    for u in range(Ho):
                        for v in range(Wo):
                            pix = xp[u * sh + a * dh, v * sw + b * dw]
                            if pix >= 0:
                                out[(f * Ho + u) * Wo + v, c * H * W + pix] += w[f, ci, a, b]
    return out


def naive_gradient(geom, g: np.ndarray) -> np.ndarray:
    """Dense K (F*Cg*kh*kw, C*H*W): row (f, ci, a, b) is dw[f, ci, a, b] as a map of x."""
    C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, G, mode = as_tuple(geom)
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    Cg, Fg = C // G, F // G
    xp = padded_index_image(H, W, ph, pw, mode)
    g = np.asarray(g)
    assert g.shape == (F, Ho, Wo)
    out = np.zeros((F * Cg * kh * kw, C * H * W), dtype=g.dtype)
    for f in range(F):
        for ci in range(Cg):
            c = (f // Fg) * Cg + ci
            for a in range(kh):
                for b in range(kw):
                    row = ((f * Cg + ci) * kh + a) * kw + b
                    for u in range(Ho):
                        for v in range(Wo):
                            pix = xp[u * sh + a * dh, v * sw + b * dw]
                            if pix >= 0:
                                out[row, c * H * W + pix] += g[f, u, v]
    return out


def naive_channel_block(geom, g: np.ndarray) -> np.ndarray:
    """K_c (Fg'*kh*kw, H*W) for ONE input channel and the gradient maps in ``g``."""
    C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, G, mode = as_tuple(geom)
    single = (1, H, W, g.shape[0], kh, kw, sh, sw, ph, pw, dh, dw, 1, mode)
    return naive_gradient(single, g)


def naive_conv_output(geom, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """z (F, Ho, Wo) computed directly on a padded copy of x (no matrices)."""
    C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, G, mode = as_tuple(geom)
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    Cg, Fg = C // G, F // G
    pad = ((0, 0), (ph, ph), (pw, pw))
    xp = np.pad(x, pad, mode="constant") if mode == "zeros" else np.pad(x, pad, mode=NUMPY_PAD_MODE[mode])
    z = np.zeros((F, Ho, Wo))
    for f in range(F):
        for ci in range(Cg):
            c = (f // Fg) * Cg + ci
            for a in range(kh):
                for b in range(kw):
                    for u in range(Ho):
                        for v in range(Wo):
                            z[f, u, v] += w[f, ci, a, b] * xp[c, u * sh + a * dh, v * sw + b * dw]
    return z


def naive_linear(n_in: int, n_out: int, T: int, A: np.ndarray, g: np.ndarray):
    """Linear layer on T positions, unknowns x[i, t] (flat i*T + t): returns (W, K) dense.

    z[j,t] = sum_i A[j,i] x[i,t] (rows (j,t));  dA[j,i] = sum_t g[j,t] x[i,t] (rows (j,i)).
    """
    Wm = np.zeros((n_out * T, n_in * T), dtype=A.dtype)
    Km = np.zeros((n_out * n_in, n_in * T), dtype=g.dtype)
    for j in range(n_out):
        for i in range(n_in):
            for t in range(T):
                Wm[j * T + t, i * T + t] += A[j, i]
                Km[j * n_in + i, i * T + t] += g[j, t]
    return Wm, Km


# --------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------

def rank_fraction(A) -> int:
    """Exact rank over Q by Gaussian elimination in Fractions (tiny matrices only)."""
    M = [[Fraction(int(v)) if float(v).is_integer() else Fraction(v) for v in row]
         for row in np.asarray(A).tolist()]
    rank, rows = 0, len(M)
    cols = len(M[0]) if rows else 0
    for c in range(cols):
        piv = next((i for i in range(rank, rows) if M[i][c] != 0), None)
        if piv is None:
            continue
        M[rank], M[piv] = M[piv], M[rank]
        for i in range(rank + 1, rows):
            if M[i][c] != 0:
                f = M[i][c] / M[rank][c]
                M[i] = [x - f * y for x, y in zip(M[i], M[rank])]
        rank += 1
    return rank


def rank_mod_p_numpy(A, p: int = P31) -> int:
    """Rank of an integer matrix over GF(p), p < 2**31, by plain row reduction in int64 numpy.

    Column by column: find a row with a non-zero entry, scale it to 1, subtract it from the other
    remaining rows that are non-zero in that column.  (p - 1)**2 < 2**62 so nothing overflows.
    """
    assert p < 2**31
    M = np.mod(np.asarray(A).astype(np.int64), p)
    if M.ndim != 2 or M.size == 0:
        return 0
    if M.shape[0] < M.shape[1]:
        M = M.T.copy()
    rank = 0
    m, n = M.shape
    for c in range(n):
        if rank == m:
            break
        nz = np.flatnonzero(M[rank:, c])
        if nz.size == 0:
            continue
        piv = rank + nz[0]
        if piv != rank:
            M[[rank, piv]] = M[[piv, rank]]
        inv = pow(int(M[rank, c]), p - 2, p)
        M[rank, c:] = (M[rank, c:] * inv) % p
        others = rank + 1 + np.flatnonzero(M[rank + 1:, c])
        if others.size:
            f = M[others, c][:, None]
            M[others, c:] = (M[others, c:] - (f * M[rank, c:]) % p) % p
        rank += 1
    return rank


def random_ints(rng: np.random.Generator, shape, p: int = P31) -> np.ndarray:
    """Uniform non-zero residues mod p as int64."""
    return rng.integers(1, p, size=shape, dtype=np.int64)


def generic_rank_dense(build, draws: int = 3, seed: int = 0, rank_fn=rank_mod_p_numpy,
                       p: int = P31) -> int:
    """max over ``draws`` random instances of rank_fn(build(rng) mod p)."""
    best = 0
    for d in range(draws):
        rng = np.random.default_rng([seed, d, 12345])
        best = max(best, rank_fn(np.mod(build(rng), p), p))
    return best


P20 = 1_048_573  # prime below 2**20: instances the kernel's fast rank_mod_p can also reduce
# rows * cols * min(rows, cols) up to which rank_mod_p_numpy is used (every C*H*W <= 400 layer)
NUMPY_MAX_COST = int(os.environ.get("NAIVE_NUMPY_MAX_COST", 200_000_000))


def reference_rank_engine(rows: int, cols: int):
    """(rank function, prime) for a dense reference of this size.

    Small matrices use the independent int64 row reduction mod 2**31 - 1.  Larger ones use the
    kernel's blocked ``rank_mod_p`` (validated against ``rank_mod_p_naive`` and
    ``rank_mod_p_numpy`` in test_kernels_modp.py) with a prime none of the kernel's own draws
    use, so only the elimination routine, never the structure under test, is shared.
    """
    if rows * cols * min(rows, cols) <= NUMPY_MAX_COST:
        return rank_mod_p_numpy, P31
    from archscan_kernels.modp import rank_mod_p
    return rank_mod_p, P20


def dense_generic_ranks(geom, draws: int = 3, seed: int = 0, target=None,
                        engine=None) -> tuple[int, int, int]:
    """Generic (rank [W;K], rank W, rank K) of a conv layer: max over random integer instances.

    Each draw takes one random kernel tensor and one random gradient tensor (weight sharing
    respected), builds W and K with the explicit loops above, and eliminates W, K and [W; K]
    of that instance mod p.  ``target`` (claimed ranks) lets the loop stop after a draw that
    reaches it: an instance's rank never exceeds the generic rank, and falls short of it with
    probability <= r/p, so a draw that reaches the claim confirms it and one that exceeds it
    refutes it outright.  ``engine`` = (rank function, prime) overrides the size-based choice.
    """
    C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, G, mode = as_tuple(geom)
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    rows = F * Ho * Wo + F * (C // G) * kh * kw
    rank_fn, p = engine or reference_rank_engine(rows, C * H * W)
    best = (0, 0, 0)
    for d in range(draws):
        rng = np.random.default_rng([seed, d, 777])
        w = random_ints(rng, (F, C // G, kh, kw), p)
        g = random_ints(rng, (F, Ho, Wo), p)
        Wm, Km = naive_forward(geom, w) % p, naive_gradient(geom, g) % p
        r = (rank_fn(np.vstack([Wm, Km]), p), rank_fn(Wm, p), rank_fn(Km, p))
        best = tuple(max(x, y) for x, y in zip(best, r))
        if target is not None and all(b >= t for b, t in zip(best, target)):
            break
    return best


def dense_channel_rank(geom, Fg: int | None = None, draws: int = 3, seed: int = 0,
                       target: int | None = None) -> int:
    """Generic rank of K_c (one input channel, ``Fg`` gradient maps) by dense elimination."""
    C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, G, mode = as_tuple(geom)
    Fg = F // G if Fg is None else Fg
    Ho, Wo = out_size(H, kh, sh, ph, dh), out_size(W, kw, sw, pw, dw)
    best = 0
    for d in range(draws):
        rng = np.random.default_rng([seed, d, 999])
        best = max(best, rank_mod_p_numpy(naive_channel_block(geom, random_ints(rng, (Fg, Ho, Wo)))))
        if target is not None and best >= target:
            break
    return best


def float_svd(A: np.ndarray) -> np.ndarray:
    """Singular values (descending), padded with zeros to min(m, n)."""
    if A.size == 0:
        return np.zeros(0)
    return np.linalg.svd(A, compute_uv=False)


# --------------------------------------------------------------------------------------------
# The theory.md conjecture for rank(K_c) (dilation 1, groups 1, zero padding)
# --------------------------------------------------------------------------------------------

def covered_rows(n: int, k: int, s: int, p: int) -> list[int]:
    """Pixel rows (along one axis) that some tap reads, dilation 1, zero padding."""
    no = out_size(n, k, s, p, 1)
    return sorted({u * s + a - p for u in range(no) for a in range(k) if 0 <= u * s + a - p < n})


def live_taps(n: int, k: int, s: int, p: int) -> list[int]:
    """Kernel taps (along one axis) that read at least one real pixel, dilation 1."""
    no = out_size(n, k, s, p, 1)
    return [a for a in range(k) if any(0 <= u * s + a - p < n for u in range(no))]


def conjecture_channel_rank(geom, live_only: bool = False) -> int:
    """theory.md: sum over residue classes (r, t) of min(F n_taps(r) n_taps(t), n_pix(r) n_pix(t)).

    Residue r of pixel row h is (h + p) mod s; taps a with a = r (mod s) read exactly the rows
    of residue r.  n_pix counts covered rows only (uncovered pixels are zero columns).  As
    written, n_taps counts every kernel tap; ``live_only`` counts only taps that read some real
    pixel (a tap that only ever reads padding contributes zero rows).
    """
    C, H, W, F, kh, kw, sh, sw, ph, pw, dh, dw, G, mode = as_tuple(geom)
    assert dh == dw == 1 and G == 1 and mode == "zeros"
    rows_h, rows_w = covered_rows(H, kh, sh, ph), covered_rows(W, kw, sw, pw)
    taps_h = live_taps(H, kh, sh, ph) if live_only else list(range(kh))
    taps_w = live_taps(W, kw, sw, pw) if live_only else list(range(kw))
    total = 0
    for r in range(sh):
        taps_r = sum(1 for a in taps_h if a % sh == r)
        pix_r = sum(1 for h in rows_h if (h + ph) % sh == r)
        for t in range(sw):
            taps_t = sum(1 for b in taps_w if b % sw == t)
            pix_t = sum(1 for w_ in rows_w if (w_ + pw) % sw == t)
            total += min(F * taps_r * taps_t, pix_r * pix_t)
    return total


# --------------------------------------------------------------------------------------------
# Hypothesis strategies for random small geometries
# --------------------------------------------------------------------------------------------

def _strategies():
    from hypothesis import assume
    from hypothesis import strategies as st

    @st.composite
    def geometries(draw, max_unknowns: int = 400, groups: bool = True, modes=PADDING_MODES,
                   dilation: bool = True, max_k: int = 4, max_s: int = 3, max_p: int = 3,
                   max_cg: int = 4, max_fg: int = 6, torch_padding: bool = False,
                   max_extra: int = 10):
        """Kwargs for ConvGeometry: channels, groups (incl. depthwise), rectangular kernels,
        strides, paddings, dilations, padding modes, rectangular inputs, C*H*W <= max_unknowns.

        ``torch_padding`` keeps circular padding <= the input size (torch wraps at most once).
        """
        mode = draw(st.sampled_from(modes))
        G = draw(st.integers(1, 3)) if groups else 1
        if groups and draw(st.integers(0, 4)) == 0:   # depthwise (channel multiplier 1..3)
            G = draw(st.integers(1, 4))
            Cg, Fg = 1, draw(st.integers(1, 3))
        else:
            Cg, Fg = draw(st.integers(1, max_cg)), draw(st.integers(1, max_fg))
        C, F = G * Cg, G * Fg
        dims = {}
        budget = max(1, max_unknowns // C)
        for axis in ("h", "w"):
            k = draw(st.integers(1, max_k))
            s = draw(st.integers(1, max_s))
            d = draw(st.integers(1, 3)) if dilation and k > 1 else 1
            p = draw(st.integers(0, max_p))
            ext = d * (k - 1) + 1
            lo = max(1, ext - 2 * p)
            if mode == "reflect":
                lo = max(lo, p + 1)
            if mode == "circular" and torch_padding:
                lo = max(lo, p)
            hi = max(lo, min(lo + max_extra, budget if axis == "h" else budget // dims["H"]))
            n = draw(st.integers(lo, hi))
            dims["H" if axis == "h" else "W"] = n
            dims.update({f"k{axis}": k, f"s{axis}": s, f"d{axis}": d, f"p{axis}": p})
        assume(C * dims["H"] * dims["W"] <= max_unknowns)
        return dict(C=C, H=dims["H"], W=dims["W"], F=F, kh=dims["kh"], kw=dims["kw"],
                    sh=dims["sh"], sw=dims["sw"], ph=dims["ph"], pw=dims["pw"], dh=dims["dh"],
                    dw=dims["dw"], groups=G, padding_mode=mode)

    return geometries


def geometries(**kwargs):
    """Hypothesis strategy of ConvGeometry keyword dicts (see ``_strategies``)."""
    return _strategies()(**kwargs)


def random_geometry(rng: np.random.Generator, max_unknowns: int = 400, max_k: int = 5,
                    max_s: int = 3, max_p: int = 3, max_c: int = 4, max_f: int = 12) -> dict:
    """A seeded random groups=1, zero-padding, dilation-1 geometry (for rate estimates)."""
    while True:
        C, F = int(rng.integers(1, max_c + 1)), int(rng.integers(1, max_f + 1))
        kh, kw = int(rng.integers(1, max_k + 1)), int(rng.integers(1, max_k + 1))
        sh, sw = int(rng.integers(1, max_s + 1)), int(rng.integers(1, max_s + 1))
        ph, pw = int(rng.integers(0, min(max_p, kh - 1) + 1)), int(rng.integers(0, min(max_p, kw - 1) + 1))
        H, W = int(rng.integers(max(1, kh - 2 * ph), 17)), int(rng.integers(max(1, kw - 2 * pw), 17))
        if C * H * W <= max_unknowns and out_size(H, kh, sh, ph, 1) >= 1 and out_size(W, kw, sw, pw, 1) >= 1:
            return dict(C=C, H=H, W=W, F=F, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw)


def cnn_geometry(rng: np.random.Generator, max_unknowns: int = 400) -> dict:
    """A seeded random CNN-like layer: F >= C, square-ish kernel 1/3/5, stride 1-2, padding
    0 or k//2, groups 1, zero padding, dilation 1."""
    while True:
        C = int(rng.integers(1, 5))
        F = int(rng.integers(C, 13))
        k = int(rng.choice([1, 3, 5]))
        s = int(rng.choice([1, 2]))
        p = int(rng.choice([0, k // 2]))
        H = int(rng.integers(max(4, k), 17))
        W = H if rng.random() < 0.7 else int(rng.integers(max(4, k), 17))
        if C * H * W <= max_unknowns:
            return dict(C=C, H=H, W=W, F=F, kh=k, kw=k, sh=s, sw=s, ph=p, pw=p)


# ---------------------------------------------------------------------------------------------
# Dense reference for the matrix-free spectrum of the gradient map (archscan.analysis.spectrum)


def dense_gram(op, chunk: int = 64, point: int = 0) -> np.ndarray:
    """A = JᵀJ at one of ``op``'s points as an explicit (n, n) float64 matrix, from n products on
    the unit vectors (symmetrised)."""
    import torch
    eye = torch.eye(op.n, dtype=torch.float64, device=op.device)
    cols = [op(eye[i : i + chunk], point_rows=np.full(len(eye[i : i + chunk]), point), batched=True).cpu().numpy()
            for i in range(0, op.n, chunk)]
    A = np.concatenate(cols)
    return 0.5 * (A + A.T)


@dataclass(frozen=True)
class DenseReference:
    """Exact weak-energy fractions from the eigendecomposition of A (per sample and overall)."""

    eigenvalues: np.ndarray
    hard: np.ndarray
    soft: np.ndarray
    tikhonov: np.ndarray
    overall_hard: float
    overall_soft: float
    overall_tikhonov: float
    lambda_max: float
    threshold: float


def dense_reference(A, samples, tau: float, threshold: float | None = None, eig=None,
                    t_noise=0.0) -> DenseReference:
    """Exact fractions for an explicit A: hard ||P_{lambda<t} v||², soft vᵀt²(A+tI)^-2 v, tikhonov
    vᵀt(A+tI)^-1 v, each over ||v||², with t = tau² lambda_max(A) unless ``threshold`` is given.

    ``t_noise`` (a number or one per sample): a noise floor, written here as the damped solve's
    mean squared error, bias T²(A+T)^-2 plus noise variance t_noise A (A+T)^-2 with T = t + t_noise,
    hard at lambda < T, tikhonov T(A+T)^-1."""
    lam, U = np.linalg.eigh(A) if eig is None else eig
    t = tau ** 2 * float(lam[-1]) if threshold is None else threshold
    V = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    C = (V @ U) ** 2                                    # energy of each sample per eigenvector
    sq = C.sum(1)
    lp = np.maximum(lam, 0.0)
    tn = np.broadcast_to(np.asarray(t_noise, dtype=np.float64), (len(V),))[:, None]
    T = t + tn                                          # (k, 1) per sample
    E = {"hard": (C * (lam[None] < T)).sum(1), "soft": (C * (T ** 2 + tn * lp) / (lp + T) ** 2).sum(1),
         "tikhonov": (C * (T / (lp + T))).sum(1)}
    frac = {k: v / sq for k, v in E.items()}
    ov = {k: float(v.sum() / sq.sum()) for k, v in E.items()}
    return DenseReference(lam, frac["hard"], frac["soft"], frac["tikhonov"], ov["hard"], ov["soft"],
                          ov["tikhonov"], float(lam[-1]), t)
