"""A natural-image prior from photographs that ship inside scikit-image (nothing is downloaded).

Centre crops and seeded random crops of the bundled photos (archscan.images), resized to the
model's input, in [0, 1]: the sample behind the predicted reconstruction error
E||P_null x||^2 = tr(P_null Sigma) + ||P_null mu||^2.

Decoding the photos and resizing them takes most of a second, more than every other step of a
small scan.  The array is therefore kept on disk, like numba's compiled kernels: in
``$ARCHSCAN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/archscan`` or ``~/.cache/archscan``; ``off``
disables it), keyed by shape, count, seed and the versions that shape the pixels, only for
arrays up to ``CACHE_MAX_BYTES``.  A cache that cannot be read or written is skipped silently:
the same array is computed instead, byte for byte.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

PRIOR_VERSION = 1               # bump when the photos, crops or resizing change
CACHE_MAX_BYTES = 16 * 2 ** 20  # 3x128x128 at 24 images; larger inputs take minutes to scan anyway


@lru_cache(maxsize=8)
def prior_images(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """n images of ``shape`` (C, H, W) in [0, 1], flattened: array (n, C*H*W)."""
    path = cache_path(tuple(shape), n, seed)
    if path is not None:
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (n, int(np.prod(shape))) and cached.dtype == np.float64:
                return cached
        except (OSError, ValueError):
            pass
    images = computed_prior(tuple(shape), n, seed)
    if path is not None:
        _store(path, images)
    return images


def computed_prior(shape: tuple, n: int, seed: int) -> np.ndarray:
    """The prior images computed from the photos (what the cache holds)."""
    import torch

    from archscan.images import load_images
    images, _ = load_images(None, n, tuple(shape), seed=seed, dtype=torch.float64)
    return images.reshape(n, -1).numpy()


def cache_path(shape: tuple, n: int, seed: int) -> Path | None:
    """Where the prior of this shape, count and seed is kept; None when not cached."""
    root = os.environ.get("ARCHSCAN_CACHE_DIR", "")
    if root.lower() == "off" or 8 * n * int(np.prod(shape)) > CACHE_MAX_BYTES:
        return None
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "archscan")
    import scipy
    import skimage
    key = f"{PRIOR_VERSION}|{shape}|{n}|{seed}|{skimage.__version__}|{scipy.__version__}|{np.__version__}"
    return Path(root) / f"prior-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npy"


def _store(path: Path, images: np.ndarray) -> None:
    """Write atomically (a temporary file renamed), or not at all."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, images, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
