"""Conv2d geometry: validated shapes, output size, and how padded positions map to pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvGeometry:
    """A Conv2d layer applied to one C x H x W input.

    ``padding_mode`` follows torch: non-zero modes copy interior pixels into the padding, so a
    padded position is folded onto the pixel it copies (no extra unknowns).
    """

    C: int
    H: int
    W: int
    F: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    ph: int = 0
    pw: int = 0
    dh: int = 1
    dw: int = 1
    groups: int = 1
    padding_mode: str = "zeros"

    def __post_init__(self):
        for name in ("C", "H", "W", "F", "kh", "kw", "sh", "sw", "dh", "dw", "groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConvGeometry.{name} must be >= 1, got {getattr(self, name)}")
        if self.ph < 0 or self.pw < 0:
            raise ValueError("ConvGeometry padding must be >= 0")
        if self.C % self.groups or self.F % self.groups:
            raise ValueError(f"groups={self.groups} must divide C={self.C} and F={self.F}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"unknown padding_mode {self.padding_mode!r}")
        if self.padding_mode == "reflect" and (self.ph >= self.H or self.pw >= self.W):
            raise ValueError("reflect padding must be smaller than the input")
        if self.Ho < 1 or self.Wo < 1:
            raise ValueError(f"kernel larger than padded input: output {self.Ho}x{self.Wo}")

    @property
    def Ho(self) -> int:
        return (self.H + 2 * self.ph - self.dh * (self.kh - 1) - 1) // self.sh + 1

    @property
    def Wo(self) -> int:
        return (self.W + 2 * self.pw - self.dw * (self.kw - 1) - 1) // self.sw + 1

    @property
    def Cg(self) -> int:
        return self.C // self.groups

    @property
    def Fg(self) -> int:
        return self.F // self.groups

    @property
    def unknowns(self) -> int:
        return self.C * self.H * self.W

    def padded_entries(self) -> int:
        """P rows of the R-GAP formulation (padded positions kept as unknowns pinned to 0)."""
        if self.padding_mode != "zeros":
            return 0
        return self.C * ((self.H + 2 * self.ph) * (self.W + 2 * self.pw) - self.H * self.W)


def fold(t: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map padded coordinates to the pixel each reads, or -1 for a zero-padded position (numpy)."""
    t = np.asarray(t, np.int64)
    inside = (t >= 0) & (t < n)
    if mode == "zeros":
        return np.where(inside, t, -1)
    if mode == "reflect":  # edge not repeated
        period = max(2 * (n - 1), 1)
        r = np.mod(t, period)
        return np.where(inside, t, np.where(r < n, r, period - r)) if n > 1 else np.zeros_like(t)
    if mode == "replicate":
        return np.clip(t, 0, n - 1)
    return np.mod(t, n)  # circular


def read_table(geom: ConvGeometry) -> np.ndarray:
    """pix[a*kw+b, u*Wo+v] = flat pixel h*W+w that tap (a, b) reads at output (u, v), or -1.

    Every operator builder reads its incidences from this one table, so padding modes, stride and
    dilation are handled in exactly one place.
    """
    u, v = np.arange(geom.Ho), np.arange(geom.Wo)
    a, b = np.arange(geom.kh), np.arange(geom.kw)
    hmap = fold(u[None, :] * geom.sh + a[:, None] * geom.dh - geom.ph, geom.H, geom.padding_mode)
    wmap = fold(v[None, :] * geom.sw + b[:, None] * geom.dw - geom.pw, geom.W, geom.padding_mode)
    h, w = hmap[:, None, :, None], wmap[None, :, None, :]
    pix = np.where((h >= 0) & (w >= 0), h * geom.W + w, -1)
    return np.ascontiguousarray(pix.reshape(geom.kh * geom.kw, geom.Ho * geom.Wo))


def tap_masks(geom: ConvGeometry) -> np.ndarray:
    """Boolean (kh*kw, H, W): which pixels each kernel tap reads."""
    pix = read_table(geom)
    masks = np.zeros((pix.shape[0], geom.H * geom.W), bool)
    taps, _ = np.nonzero(pix >= 0)
    masks[taps, pix[pix >= 0]] = True
    return masks.reshape(-1, geom.H, geom.W)


def covered_pixels(geom: ConvGeometry) -> np.ndarray:
    """Boolean (H, W): pixels some kernel window reaches; the others are zero columns."""
    return tap_masks(geom).any(axis=0)


def live_outputs(geom: ConvGeometry) -> int:
    """Output positions whose window reads a real pixel (the others are zero forward rows)."""
    return int((read_table(geom) >= 0).any(axis=0).sum())
