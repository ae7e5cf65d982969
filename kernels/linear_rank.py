"""Linear layers as 1x1 convolutions over their positions.

``nn.Linear(n, m)`` applied to T positions (T = 1 for an image classifier's head; tokens for a
transformer) is exactly a 1x1 conv with n input channels, m filters, on a T x 1 "image":
z[j, t] = sum_i A[j, i] x[i, t] and dA[j, i] = sum_t g[j, t] x[i, t].  The conv rank engine
therefore covers it, including the m^2 forward/gradient overlap.
"""
from __future__ import annotations

from .conv_rank import ConvRanks, conv_ranks
from .geometry import ConvGeometry


def linear_geometry(n_in: int, n_out: int, positions: int = 1) -> ConvGeometry:
    return ConvGeometry(C=n_in, H=positions, W=1, F=n_out, kh=1, kw=1)


def linear_ranks(n_in: int, n_out: int, positions: int = 1, draws: int = 2, seed: int = 0) -> ConvRanks:
    """Ranks of W, K and [W; K] for a Linear layer on ``positions`` input vectors."""
    return conv_ranks(linear_geometry(n_in, n_out, positions), draws, seed)
