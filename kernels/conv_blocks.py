"""The pieces of a conv layer's system the rank engine eliminates: K_c component blocks and
small stacked instances (dense, integer-valued, drawn at random mod p)."""
from __future__ import annotations

import numpy as np

from .config import njit
from .conv_ops import tap_components
from .geometry import ConvGeometry, read_table
from .modp import random_field


@njit
def _fill_component(out, g, taps, colmap, pix):
    """Rows (f, tap in ``taps``) of K_c restricted to the pixels of one component."""
    nt = taps.shape[0]
    for f in range(g.shape[0]):
        for j in range(nt):
            for q in range(pix.shape[1]):
                p = pix[taps[j], q]
                if p >= 0:
                    out[f * nt + j, colmap[p]] += g[f, q]


def component_block(geom: ConvGeometry, g: np.ndarray, taps: np.ndarray, pixels: np.ndarray):
    """Dense block of K_c: rows (filter, tap) for ``taps``, columns ``pixels``."""
    colmap = np.full(geom.H * geom.W, -1, np.int64)
    colmap[pixels] = np.arange(pixels.size)
    out = np.zeros((g.shape[0] * taps.size, pixels.size))
    _fill_component(out, np.asarray(g, np.float64).reshape(len(g), -1), taps.astype(np.int64), colmap,
                    read_table(geom))
    return out


def component_builder(geom: ConvGeometry, Fg: int, taps, pixels):
    """A ``build(rng, p)`` for one K_c component with Fg random gradient maps."""
    def build(rng, p):
        return component_block(geom, random_field(rng, (Fg, geom.Ho, geom.Wo), p), taps, pixels)
    return build


def stack_builder(geom: ConvGeometry, n_chan: int, n_filt_w: int, n_filt_k: int,
                  forward: bool = True, gradient: bool = True, masks=None, spatial: bool = False):
    """A ``build(rng, p)`` for the stacked [W; K] of ``n_chan`` channels (groups=1 view).

    W uses ``n_filt_w`` filters over the ``n_chan`` channels; K uses ``n_filt_k`` gradient maps.
    With ``n_filt_w < n_filt_k`` this is one block of the *grouped witness*: a block-diagonal
    kernel whose instance rank is a lower bound on the generic rank.  ``masks`` = (row_keep,
    g_keep) removes inactive forward rows and zeroes inactive gradient entries (ReLU).
    ``spatial`` orders W's rows (u, v, f) and all columns (h, w, c), gradient rows last: the same
    matrix up to row and column permutations (same rank), banded for ``banded_rank_mod_p``.
    """
    n_w = n_filt_w if forward else 0
    n_k = n_filt_k if gradient else 0
    pix, nt, HW = read_table(geom), geom.kh * geom.kw, geom.H * geom.W
    nq = pix.shape[1]
    keep = np.ones(n_w * nq, bool) if masks is None else np.asarray(masks[0][: n_w * nq], bool)
    rowpos = _row_positions(keep, n_w, nq, spatial)
    w_rows = int(keep.sum())
    colmap = _column_map(n_chan, HW, spatial)

    def build(rng, p):
        w = random_field(rng, (n_w, n_chan, nt), p) if n_w else np.zeros((0, n_chan, nt))
        g = random_field(rng, (n_k, nq), p) if n_k else np.zeros((0, nq))
        if masks is not None and n_k:
            g = g * masks[1][:n_k].reshape(n_k, -1)
        out = np.zeros((w_rows + n_k * n_chan * nt, n_chan * HW))
        _fill_stack(out, w, g, pix, rowpos, w_rows, colmap)
        return out
    return build


def _row_positions(keep: np.ndarray, n_w: int, nq: int, spatial: bool) -> np.ndarray:
    """Row of W-row (f, q) in the instance (-1 when masked out); (q, f) order when spatial."""
    order = np.arange(n_w * nq).reshape(n_w, nq)
    if spatial:
        order = order.T
    order = order.reshape(-1)                  # original row indices in instance order
    pos = np.full(n_w * nq, -1, np.int64)
    kept = order[keep[order]]
    pos[kept] = np.arange(kept.size)
    return pos


def _column_map(n_chan: int, HW: int, spatial: bool) -> np.ndarray:
    """Column of unknown (c, pixel): c * HW + pixel, or pixel * n_chan + c when spatial."""
    cols = np.arange(n_chan * HW, dtype=np.int64)
    return cols.reshape(HW, n_chan).T.copy() if spatial else cols.reshape(n_chan, HW)


@njit
def _fill_stack(out, w, g, pix, rowpos, r0, colmap):
    """W rows (f, q) at ``rowpos``, then K rows (f, c, tap) from row r0; unknown (c, pixel) in
    column ``colmap[c, pixel]``."""
    nt, nq, n_chan = pix.shape[0], pix.shape[1], colmap.shape[0]
    for f in range(w.shape[0]):
        for q in range(nq):
            r = rowpos[f * nq + q]
            if r < 0:
                continue
            for c in range(n_chan):
                for t in range(nt):
                    px = pix[t, q]
                    if px >= 0:
                        out[r, colmap[c, px]] += w[f, c, t]
    for f in range(g.shape[0]):
        for c in range(n_chan):
            for t in range(nt):
                row = r0 + (f * n_chan + c) * nt + t
                for q in range(nq):
                    px = pix[t, q]
                    if px >= 0:
                        out[row, colmap[c, px]] += g[f, q]


def components(geom: ConvGeometry):
    return tap_components(geom)
