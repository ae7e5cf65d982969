"""Conv2d as linear maps of its input: forward operator W, gradient operator K, and K's blocks.

``z[f,u,v] = sum w[f,c,a,b] x[c, pos(u,a), pos(v,b)]`` (rows W) and
``dw[f,c,a,b] = sum_{u,v} g[f,u,v] x[c, pos(u,a), pos(v,b)]`` (rows K) are read off the same
incidences (f, c, a, b, u, v); W takes its values from one kernel tensor and K from one upstream
gradient tensor, so weight sharing is respected.  Builders return dense matrices only for the
small blocks the rank engine eliminates; large layers are never densified whole.
"""
from __future__ import annotations

import numpy as np

from .config import njit
from .geometry import ConvGeometry, read_table, tap_masks


@njit
def _fill_forward(out, w, pix, Cg, Fg, HW):
    """Rows (f, u, v): out[f*HoWo + q, c*HW + pix[t, q]] += w[f, ci, t] for channels of f's group."""
    F, nq = w.shape[0], pix.shape[1]
    for f in range(F):
        g0 = (f // Fg) * Cg
        for ci in range(Cg):
            for t in range(pix.shape[0]):
                for q in range(nq):
                    p = pix[t, q]
                    if p >= 0:
                        out[f * nq + q, (g0 + ci) * HW + p] += w[f, ci, t]


@njit
def _fill_gradient(out, g, chans, pix, HW):
    """Rows (f, j, tap) for the gradient maps g (F, HoWo) and the input channels ``chans``."""
    nt, nq, nch = pix.shape[0], pix.shape[1], chans.shape[0]
    for f in range(g.shape[0]):
        for j in range(nch):
            for t in range(nt):
                row = (f * nch + j) * nt + t
                for q in range(nq):
                    p = pix[t, q]
                    if p >= 0:
                        out[row, chans[j] * HW + p] += g[f, q]


def forward_matrix(geom: ConvGeometry, w: np.ndarray) -> np.ndarray:
    """Dense W (F*Ho*Wo, C*H*W) for kernel ``w`` (F, C/groups, kh, kw). Small layers only."""
    w = np.asarray(w, np.float64)
    if w.shape != (geom.F, geom.Cg, geom.kh, geom.kw):
        raise ValueError(f"kernel shape {w.shape} does not match {geom}")
    out = np.zeros((geom.F * geom.Ho * geom.Wo, geom.unknowns))
    _fill_forward(out, w.reshape(geom.F, geom.Cg, -1), read_table(geom), geom.Cg, geom.Fg, geom.H * geom.W)
    return out


def gradient_matrix(geom: ConvGeometry, g: np.ndarray) -> np.ndarray:
    """Dense K (F*(C/groups)*kh*kw, C*H*W) for upstream gradient ``g`` (F, Ho, Wo). Small only.

    Row (f, ci, a, b) is the weight-gradient entry dw[f, ci, a, b]; its input channel is
    ``(f // (F/groups)) * (C/groups) + ci``.
    """
    g = _check_grad(geom, g).reshape(geom.F, -1)
    pix, rows = read_table(geom), geom.Fg * geom.Cg * geom.kh * geom.kw
    out = np.zeros((geom.groups * rows, geom.unknowns))
    for gi in range(geom.groups):
        chans = np.arange(gi * geom.Cg, (gi + 1) * geom.Cg, dtype=np.int64)
        _fill_gradient(out[gi * rows:(gi + 1) * rows], g[gi * geom.Fg:(gi + 1) * geom.Fg], chans, pix,
                       geom.H * geom.W)
    return out


def _check_grad(geom: ConvGeometry, g) -> np.ndarray:
    g = np.asarray(g, np.float64)
    if g.shape != (geom.F, geom.Ho, geom.Wo):
        raise ValueError(f"gradient shape {g.shape} does not match output {(geom.F, geom.Ho, geom.Wo)}")
    return g


def channel_gradient_block(geom: ConvGeometry, g: np.ndarray) -> np.ndarray:
    """K_c (Fg*kh*kw, H*W): the gradient rows of ONE input channel, for the filters in ``g``.

    K is block diagonal over input channels with this block repeated (per group), so
    rank(K) = sum over groups of Cg * rank(K_c).
    """
    g = np.asarray(g, np.float64).reshape(len(g), -1)
    out = np.zeros((g.shape[0] * geom.kh * geom.kw, geom.H * geom.W))
    _fill_gradient(out, g, np.zeros(1, np.int64), read_table(geom), geom.H * geom.W)
    return out


def tap_components(geom: ConvGeometry) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split K_c into independent blocks: groups of taps that share no pixel.

    Returns a list of (taps, pixels): flat tap indices a*kw+b and flat pixel indices h*W+w.
    With zero padding and dilation 1 these are the residue classes of the stride.
    """
    masks = tap_masks(geom).reshape(geom.kh * geom.kw, -1)
    parent = list(range(masks.shape[0]))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    overlap = (masks.astype(np.int32) @ masks.T.astype(np.int32)) > 0
    for i, j in zip(*np.nonzero(np.triu(overlap, 1))):
        parent[find(i)] = find(j)
    roots = {}
    for t in range(masks.shape[0]):
        if masks[t].any():
            roots.setdefault(find(t), []).append(t)
    return [(np.array(ts), np.nonzero(masks[ts].any(axis=0))[0]) for ts in roots.values()]
