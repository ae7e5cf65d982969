"""The one matrix builder: every conv matrix (W, K, K_c, a K_c component, a stacked [W; K]
instance) is filled by ``_fill`` from the incidences of ``geometry.read_table``.

An incidence (f, c, t, q) says that filter f's tap t, at output q, reads channel c at pixel
``pix[t, q]``.  A matrix is fixed by where its rows and columns go (a row map and a column map)
and by which tensor its values come from:

- forward rows W: incidence (f, c, t, q) adds ``w[f, c, t]`` to row ``rows[f, q]``;
- gradient rows K: it adds ``g[f, q]`` to row ``rows[f, c * taps + t]``;

both in column ``colmap[c0[f] + c, pix[t, q]]`` (``c0[f]``: the first channel of f's group, 0
without groups).  A row index of -1 leaves that row out.

``_fill`` runs over (filter f, row item i, value index (a, b)): row item i is one matrix row of
filter f and names a line of a read table; the value index runs over ``vals[f]`` and b also
along the line.  For W the row items are the outputs q, the lines those of the transposed table
(the taps' pixels at one output) and (a, b) = (c, t); for K the row items are the (c, t) pairs,
the lines those of the table itself (one tap's pixels over the outputs) and (a, b) = (0, q).
Each matrix row is written by one run of the inner loops, and every entry accumulates its terms
in increasing (c, t, q) order.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .config import njit


@njit
def _fill(out, rows, vals, lines, chans, c0, table, colmap):
    """out[rows[f, i], colmap[c0[f] + chans[i] + a, table[lines[i], b]]] += vals[f, a, b],
    skipped where rows[f, i] < 0 (a row left out) or the table entry is < 0 (zero padding)."""
    n_a, n_b = vals.shape[1], vals.shape[2]
    for f in range(rows.shape[0]):
        for i in range(rows.shape[1]):
            r = rows[f, i]
            if r < 0:
                continue
            line = table[lines[i]]
            c = c0[f] + chans[i]
            for a in range(n_a):
                for b in range(n_b):
                    px = line[b]
                    if px >= 0:
                        out[r, colmap[c + a, px]] += vals[f, a, b]


@lru_cache(maxsize=256)
def _tap_lines(n_chan: int, nt: int) -> tuple[np.ndarray, np.ndarray]:
    """Row items (c, t) of gradient rows, channel-major: their table lines t and channels c
    (shared between calls: never written to)."""
    return np.tile(np.arange(nt, dtype=np.int64), n_chan), np.repeat(np.arange(n_chan, dtype=np.int64), nt)


def _first_channels(n_filt: int, c0) -> np.ndarray:
    return np.zeros(n_filt, np.int64) if c0 is None else np.ascontiguousarray(c0, np.int64)


def fill_forward(out: np.ndarray, rows: np.ndarray, w: np.ndarray, pix: np.ndarray,
                 colmap: np.ndarray, c0=None) -> None:
    """Add forward rows to ``out``: out[rows[f, q], colmap[c0[f] + c, pix[t, q]]] += w[f, c, t].

    ``w`` (F, channels, taps); ``rows`` (F, outputs) int64; ``pix`` the (taps, outputs) read
    table; ``colmap`` (channels, pixels) int64; ``c0`` (F,), 0 when None.
    """
    nq = pix.shape[1]
    _fill(out, np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(w, np.float64),
          np.arange(nq, dtype=np.int64), np.zeros(nq, np.int64), _first_channels(len(w), c0),
          np.ascontiguousarray(pix.T, np.int64), np.ascontiguousarray(colmap, np.int64))


def fill_gradient(out: np.ndarray, rows: np.ndarray, g: np.ndarray, pix: np.ndarray,
                  colmap: np.ndarray, c0=None) -> None:
    """Add gradient rows to ``out``: out[rows[f, c*taps + t], colmap[c0[f] + c, pix[t, q]]] += g[f, q].

    ``g`` (F, outputs); ``rows`` (F, channels * taps) int64; ``pix``, ``colmap``, ``c0`` as for
    ``fill_forward``.
    """
    nt, nq = pix.shape
    _fill(out, np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(g, np.float64).reshape(len(g), 1, nq),
          *_tap_lines(rows.shape[1] // nt, nt), _first_channels(len(g), c0),
          np.ascontiguousarray(pix, np.int64), np.ascontiguousarray(colmap, np.int64))


def row_block(n_filt: int, per_filter: int, start: int = 0) -> np.ndarray:
    """Rows start, start + 1, ... in filter-major order, as an (n_filt, per_filter) row map."""
    return np.arange(start, start + n_filt * per_filter, dtype=np.int64).reshape(n_filt, per_filter)


def channel_columns(n_chan: int, HW: int) -> np.ndarray:
    """The plain column map: unknown (c, pixel) in column c * HW + pixel."""
    return np.arange(n_chan * HW, dtype=np.int64).reshape(n_chan, HW)
