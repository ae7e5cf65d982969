"""A natural-image prior from photographs that ship inside scikit-image (nothing is downloaded).

Random crops of the bundled photos, resized to the model's input, in [0, 1]: the sample behind the
predicted reconstruction error E||P_null x||^2 = tr(P_null Sigma) + ||P_null mu||^2.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "camera", "coins", "moon", "retina", "colorwheel", "brick")


def _photo(name: str) -> np.ndarray:
    import skimage.data
    img = getattr(skimage.data, name)().astype(np.float64) / 255.0
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


@lru_cache(maxsize=8)
def prior_images(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """n images of ``shape`` (C, H, W) in [0, 1], flattened: array (n, C*H*W)."""
    from skimage.transform import resize
    C, H, W = shape
    rng = np.random.default_rng(seed)
    photos = [_photo(p) for p in PHOTOS]
    out = np.empty((n, C * H * W))
    for i in range(n):
        img = photos[i % len(photos)]
        side = int(min(img.shape[:2]) * rng.uniform(0.4, 1.0))
        top = rng.integers(0, img.shape[0] - side + 1)
        left = rng.integers(0, img.shape[1] - side + 1)
        crop = resize(img[top:top + side, left:left + side], (H, W), anti_aliasing=True)
        out[i] = np.clip(_channels(crop.transpose(2, 0, 1), C), 0, 1).reshape(-1)
    return out


def _channels(img: np.ndarray, C: int) -> np.ndarray:
    """3 x H x W photo -> C x H x W: grey for one channel, RGB repeated cyclically beyond three."""
    if C == 1:
        return img.mean(axis=0, keepdims=True)
    return img[np.arange(C) % 3]
