"""The pieces of a conv layer's system the rank engine eliminates: K_c component blocks and
small stacked instances (dense, integer-valued, drawn at random mod p)."""
from __future__ import annotations

import numpy as np

from .conv_ops import tap_components
from .fill import channel_columns, fill_forward, fill_gradient, row_block
from .geometry import ConvGeometry, read_table
from .gfp import random_field


def component_block(geom: ConvGeometry, g: np.ndarray, taps: np.ndarray, pixels: np.ndarray):
    """Dense block of K_c: rows (filter, tap) for ``taps``, columns ``pixels``."""
    return _component_matrix(np.asarray(g, np.float64).reshape(len(g), -1),
                           *_component_maps(geom, taps, pixels))


def component_builder(geom: ConvGeometry, Fg: int, taps, pixels):
    """A ``build(rng, p)`` for one K_c component with Fg random gradient maps."""
    maps = _component_maps(geom, taps, pixels)

    def build(rng, p):
        return _component_matrix(random_field(rng, (Fg, geom.Ho, geom.Wo), p).reshape(Fg, -1), *maps)
    return build


def _component_maps(geom: ConvGeometry, taps: np.ndarray, pixels: np.ndarray):
    """The read table's lines of ``taps`` and the column map pixel -> position in ``pixels``."""
    colmap = np.full((1, geom.H * geom.W), -1, np.int64)
    colmap[0, pixels] = np.arange(pixels.size)
    return read_table(geom)[taps], colmap, pixels.size


def _component_matrix(g: np.ndarray, table: np.ndarray, colmap: np.ndarray, n_pixels: int):
    out = np.zeros((g.shape[0] * table.shape[0], n_pixels))
    fill_gradient(out, row_block(g.shape[0], table.shape[0]), g, table, colmap)
    return out


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
    w_rowmap = _row_positions(keep, n_w, nq, spatial).reshape(n_w, nq)
    w_rows = int(keep.sum())
    k_rowmap = row_block(n_k, n_chan * nt, start=w_rows)
    colmap = _column_map(n_chan, HW, spatial)

    def build(rng, p):
        w = random_field(rng, (n_w, n_chan, nt), p) if n_w else np.zeros((0, n_chan, nt))
        g = random_field(rng, (n_k, nq), p) if n_k else np.zeros((0, nq))
        if masks is not None and n_k:
            g = g * masks[1][:n_k].reshape(n_k, -1)
        out = np.zeros((w_rows + n_k * n_chan * nt, n_chan * HW))
        fill_forward(out, w_rowmap, w, pix, colmap)
        fill_gradient(out, k_rowmap, g, pix, colmap)
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
    if spatial:
        return np.ascontiguousarray(channel_columns(HW, n_chan).T)
    return channel_columns(n_chan, HW)


def components(geom: ConvGeometry):
    return tap_components(geom)
