"""Conv2d as linear maps of its input: forward operator W, gradient operator K, and K's blocks.

``z[f,u,v] = sum w[f,c,a,b] x[c, pos(u,a), pos(v,b)]`` (rows W) and
``dw[f,c,a,b] = sum_{u,v} g[f,u,v] x[c, pos(u,a), pos(v,b)]`` (rows K) are read off the same
incidences (f, c, a, b, u, v); W takes its values from one kernel tensor and K from one upstream
gradient tensor, so weight sharing is respected.  Builders return dense matrices only for the
small blocks the rank engine eliminates; large layers are never densified whole.
"""
from __future__ import annotations

import numpy as np

from .fill import channel_columns, fill_forward, fill_gradient, row_block
from .geometry import ConvGeometry, read_table, tap_masks


def forward_matrix(geom: ConvGeometry, w: np.ndarray) -> np.ndarray:
    """Dense W (F*Ho*Wo, C*H*W) for kernel ``w`` (F, C/groups, kh, kw). Small layers only."""
    w = np.asarray(w, np.float64)
    if w.shape != (geom.F, geom.Cg, geom.kh, geom.kw):
        raise ValueError(f"kernel shape {w.shape} does not match {geom}")
    pix = read_table(geom)
    out = np.zeros((geom.F * pix.shape[1], geom.unknowns))
    fill_forward(out, row_block(geom.F, pix.shape[1]), w.reshape(geom.F, geom.Cg, -1), pix,
                 channel_columns(geom.C, geom.H * geom.W), _group_channels(geom))
    return out


def gradient_matrix(geom: ConvGeometry, g: np.ndarray) -> np.ndarray:
    """Dense K (F*(C/groups)*kh*kw, C*H*W) for upstream gradient ``g`` (F, Ho, Wo). Small only.

    Row (f, ci, a, b) is the weight-gradient entry dw[f, ci, a, b]; its input channel is
    ``(f // (F/groups)) * (C/groups) + ci``.
    """
    g = _check_grad(geom, g).reshape(geom.F, -1)
    pix = read_table(geom)
    out = np.zeros((geom.F * geom.Cg * pix.shape[0], geom.unknowns))
    fill_gradient(out, row_block(geom.F, geom.Cg * pix.shape[0]), g, pix,
                  channel_columns(geom.C, geom.H * geom.W), _group_channels(geom))
    return out


def _group_channels(geom: ConvGeometry) -> np.ndarray:
    """First input channel of each filter's group."""
    return (np.arange(geom.F, dtype=np.int64) // geom.Fg) * geom.Cg


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
    pix = read_table(geom)
    out = np.zeros((g.shape[0] * pix.shape[0], geom.H * geom.W))
    fill_gradient(out, row_block(g.shape[0], pix.shape[0]), g, pix, channel_columns(1, geom.H * geom.W))
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
