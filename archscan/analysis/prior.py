"""A natural-image prior from photographs that ship inside scikit-image (nothing is downloaded).

Centre crops and seeded random crops of the bundled photos (archscan.images), resized to the
model's input, in [0, 1]: the sample behind the predicted reconstruction error
E||P_null x||^2 = tr(P_null Sigma) + ||P_null mu||^2.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from archscan.images import load_images


@lru_cache(maxsize=8)
def prior_images(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """n images of ``shape`` (C, H, W) in [0, 1], flattened: array (n, C*H*W)."""
    images, _ = load_images(None, n, tuple(shape), seed=seed, dtype=torch.float64)
    return images.reshape(n, -1).numpy()
