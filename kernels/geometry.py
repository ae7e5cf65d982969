"""Conv2d geometry: validated shapes, output size, and how padded positions map to pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import njit

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
    def mode_id(self) -> int:
        return PADDING_MODES.index(self.padding_mode)

    @property
    def unknowns(self) -> int:
        return self.C * self.H * self.W

    def params(self) -> tuple:
        """The integers the numba kernels take, in a fixed order."""
        return (self.H, self.W, self.Ho, self.Wo, self.kh, self.kw, self.sh, self.sw,
                self.ph, self.pw, self.dh, self.dw, self.mode_id)

    def padded_entries(self) -> int:
        """P rows of the R-GAP formulation (padded positions kept as unknowns pinned to 0)."""
        if self.padding_mode != "zeros":
            return 0
        return self.C * ((self.H + 2 * self.ph) * (self.W + 2 * self.pw) - self.H * self.W)


@njit
def fold(t, n, mode):
    """Map a padded coordinate to the pixel it reads, or -1 for a zero-padded position."""
    if 0 <= t < n:
        return t
    if mode == 0:
        return -1
    if mode == 1:  # reflect (edge not repeated)
        period = 2 * (n - 1)
        if period == 0:
            return 0
        t = t % period
        return t if t < n else period - t
    if mode == 2:  # replicate
        return 0 if t < 0 else n - 1
    return t % n  # circular


@njit
def _tap_masks(H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, mode):
    """masks[a*kw+b, h, w] = True when tap (a, b) reads pixel (h, w) for some output."""
    masks = np.zeros((kh * kw, H, W), np.bool_)
    for a in range(kh):
        for b in range(kw):
            for u in range(Ho):
                h = fold(u * sh + a * dh - ph, H, mode)
                if h < 0:
                    continue
                for v in range(Wo):
                    w = fold(v * sw + b * dw - pw, W, mode)
                    if w >= 0:
                        masks[a * kw + b, h, w] = True
    return masks


def tap_masks(geom: ConvGeometry) -> np.ndarray:
    """Boolean (kh*kw, H, W): which pixels each kernel tap reads."""
    return _tap_masks(*geom.params())


def covered_pixels(geom: ConvGeometry) -> np.ndarray:
    """Boolean (H, W): pixels some kernel window reaches; the others are zero columns."""
    return tap_masks(geom).any(axis=0)


@njit
def _row_hits(H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, mode):
    """hits[u, v] = True when output (u, v)'s window reads at least one real pixel."""
    hits = np.zeros((Ho, Wo), np.bool_)
    for u in range(Ho):
        for v in range(Wo):
            for a in range(kh):
                if fold(u * sh + a * dh - ph, H, mode) < 0:
                    continue
                for b in range(kw):
                    if fold(v * sw + b * dw - pw, W, mode) >= 0:
                        hits[u, v] = True
    return hits


def live_outputs(geom: ConvGeometry) -> int:
    """Output positions whose window reads a real pixel (the others are zero forward rows)."""
    return int(_row_hits(*geom.params()).sum())
