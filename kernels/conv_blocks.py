"""The pieces of a conv layer's system the rank engine eliminates: K_c component blocks and
small stacked instances (dense, integer-valued, drawn at random mod p)."""
from __future__ import annotations

import numpy as np

from .config import njit
from .conv_ops import _fill_forward, _fill_gradient, tap_components
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
                  forward: bool = True, gradient: bool = True, masks=None):
    """A ``build(rng, p)`` for the stacked [W; K] of ``n_chan`` channels (groups=1 view).

    W uses ``n_filt_w`` filters over the ``n_chan`` channels; K uses ``n_filt_k`` gradient maps.
    With ``n_filt_w < n_filt_k`` this is one block of the *grouped witness*: a block-diagonal
    kernel whose instance rank is a lower bound on the generic rank.  ``masks`` = (row_keep,
    g_keep) removes inactive forward rows and zeroes inactive gradient entries (ReLU).
    """
    sub = ConvGeometry(n_chan, geom.H, geom.W, max(n_filt_w, 1), geom.kh, geom.kw, geom.sh,
                       geom.sw, geom.ph, geom.pw, geom.dh, geom.dw, 1, geom.padding_mode)
    pix, HW = read_table(geom), geom.H * geom.W

    def build(rng, p):
        parts = []
        if forward and n_filt_w:
            w = random_field(rng, (n_filt_w, n_chan, geom.kh * geom.kw), p)
            Wm = np.zeros((n_filt_w * sub.Ho * sub.Wo, sub.unknowns))
            _fill_forward(Wm, w, pix, n_chan, n_filt_w, HW)
            parts.append(Wm if masks is None else Wm[masks[0][: Wm.shape[0]]])
        if gradient:
            g = random_field(rng, (n_filt_k, sub.Ho * sub.Wo), p)
            if masks is not None:
                g = g * masks[1][:n_filt_k].reshape(n_filt_k, -1)
            Km = np.zeros((n_filt_k * n_chan * geom.kh * geom.kw, sub.unknowns))
            _fill_gradient(Km, g, np.arange(n_chan, dtype=np.int64), pix, HW)
            parts.append(Km)
        return np.vstack(parts) if parts else np.zeros((0, sub.unknowns))
    return build


def components(geom: ConvGeometry):
    return tap_components(geom)
