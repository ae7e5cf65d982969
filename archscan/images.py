"""Offline image sources for validation runs.

``load_images(source, n, input_shape, seed)`` returns an ``N x C x H x W`` tensor in ``[0, 1]`` and
the image names.  Sources:

* ``None`` - real photographs shipped with scikit-image (astronaut, coffee, chelsea, rocket,
  camera, coins, ...): nothing is downloaded;
* a directory (or a single file) of PNG/JPEG images, read in sorted order;
* ``"synthetic"`` - seeded smooth patterns (sums of low-frequency waves and Gaussian blobs).

Photos are centre-cropped to the target aspect ratio and resized with anti-aliasing.  When more
images are asked for than the source holds, the extra ones are seeded random crops (with random
horizontal flips) of the same photos.  Grey images are repeated over three channels, colour
images are converted to grey for one-channel models, and other channel counts cycle the colour
channels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.color
import skimage.data
import skimage.io
import skimage.transform
import torch

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry",
          "hubble_deep_field", "colorwheel", "moon", "clock", "brick", "grass", "gravel", "retina",
          "logo", "page", "text")
EXTENSIONS = {".png", ".jpg", ".jpeg"}


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """Pixel values as float64 in ``[0, 1]`` (bool, integer or float input)."""
    if image.dtype == bool:
        return image.astype(np.float64)
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    return np.clip(image.astype(np.float64), 0.0, 1.0)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``H x W x channels`` version of a grey (``H x W``) or colour (``H x W x k``) image."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]  # drop alpha
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if channels == 1:
        grey = skimage.color.rgb2gray(image) if image.ndim == 3 else image
        return grey[..., None]
    colour = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    return colour[..., [c % colour.shape[2] for c in range(channels)]]


def crop_resize(image: np.ndarray, height: int, width: int, box=None) -> np.ndarray:
    """Crop to the aspect ratio ``height:width`` and resize with anti-aliasing.

    Parameters
    ----------
    image : numpy.ndarray
        ``H x W x C`` float image.
    height, width : int
        Output size.
    box : tuple or None
        ``(top, left, crop_height, crop_width)``; None is the largest centred crop.
    """
    if box is None:
        box = _centre_box(image.shape[0], image.shape[1], height / width)
    top, left, ch, cw = box
    crop = image[top : top + ch, left : left + cw]
    factor = max(1, min(ch // (4 * height), cw // (4 * width)))
    if factor > 1:  # box-average big photos first: anti-aliasing a 1400-pixel image is slow
        crop = skimage.transform.downscale_local_mean(crop, (factor, factor, 1))
    out = skimage.transform.resize(crop, (height, width, image.shape[2]), anti_aliasing=True)
    return np.clip(out, 0.0, 1.0)


def _centre_box(h: int, w: int, aspect: float):
    """Largest centred box of aspect ``height / width`` inside an ``h x w`` image."""
    ch, cw = (h, max(1, round(h / aspect))) if h / w <= aspect else (max(1, round(w * aspect)), w)
    ch, cw = min(ch, h), min(cw, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _random_box(h: int, w: int, aspect: float, rng: np.random.Generator):
    """Seeded random box covering 50-90 % of the largest box of aspect ``height / width``."""
    _, _, ch, cw = _centre_box(h, w, aspect)
    scale = rng.uniform(0.5, 0.9)
    ch, cw = max(1, int(ch * scale)), max(1, int(cw * scale))
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


def _photos(limit: int) -> list:
    """``(name, image)`` for up to ``limit`` bundled scikit-image photos (no download needed)."""
    out = []
    for name in PHOTOS:
        if len(out) == limit:
            break
        try:
            out.append((name, getattr(skimage.data, name)()))
        except Exception:  # noqa: BLE001 - some builds fetch a few images on demand: skip them
            continue
    return out


def _read_images(path: Path) -> list:
    """``(name, image)`` for every readable PNG/JPEG file of a directory (or the file itself)."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS)
    out = []
    for file in files:
        try:
            out.append((file.name, skimage.io.imread(file)))
        except Exception:  # noqa: BLE001 - unreadable or corrupt files are skipped
            continue
    if not out:
        raise ValueError(f"no readable PNG/JPEG image in {path}")
    return out


def _prepare(raw: list, n: int, shape: tuple, seed: int):
    """Convert, crop and resize ``n`` images from ``raw``, adding seeded crops beyond its length."""
    channels, height, width = shape
    rng = np.random.default_rng(seed)
    images, names = [], []
    for i in range(n):
        name, image = raw[i % len(raw)]
        image = to_channels(to_unit_float(np.asarray(image)), channels)
        if i < len(raw):
            images.append(crop_resize(image, height, width))
            names.append(name)
            continue
        out = crop_resize(image, height, width, _random_box(*image.shape[:2], height / width, rng))
        images.append(out[:, ::-1] if rng.random() < 0.5 else out)
        names.append(f"{name}-crop{i // len(raw)}")
    return images, names


def synthetic_image(shape: tuple, seed: int, index: int) -> np.ndarray:
    """Seeded smooth pattern ``H x W x C`` in ``[0, 1]``: three waves and three blobs per channel."""
    channels, height, width = shape
    rng = np.random.default_rng([seed, index])
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    out = np.zeros((height, width, channels))
    for c in range(channels):
        for _ in range(3):
            fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
            out[..., c] += np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
        for _ in range(3):
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
            out[..., c] += rng.uniform(-2, 2) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo) if hi > lo else np.full_like(out, 0.5)


def load_images(source=None, n: int = 1, input_shape=(3, 32, 32), seed: int = 0,
                dtype: torch.dtype = torch.float32):
    """Load ``n`` images of shape ``input_shape`` from ``source``, offline.

    Parameters
    ----------
    source : None, str or os.PathLike
        None (bundled photos), ``"synthetic"``, or a directory / file of PNG or JPEG images.
    n : int
        Number of images.
    input_shape : tuple of int
        ``(C, H, W)`` of the model input.
    seed : int
        Seed of the synthetic patterns and of the extra random crops.
    dtype : torch.dtype
        Floating-point type of the returned tensor.

    Returns
    -------
    tuple
        ``(images, names)``: ``n x C x H x W`` tensor in ``[0, 1]`` and a list of ``n`` names.

    Raises
    ------
    ValueError
        For ``n < 1``, a bad shape, a missing path, or a directory without readable images.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    shape = tuple(int(s) for s in input_shape)
    if isinstance(source, str) and source == "synthetic":
        images = [synthetic_image(shape, seed, i) for i in range(n)]
        names = [f"synthetic-{i}" for i in range(n)]
    else:
        images, names = _prepare(_source_images(source, n), n, shape, seed)
    batch = np.stack([np.ascontiguousarray(im.transpose(2, 0, 1)) for im in images])
    return torch.from_numpy(batch).to(dtype), names


def _source_images(source, n: int) -> list:
    """Raw ``(name, image)`` list of (up to ``n``) bundled photos or of a path."""
    if source is None:
        return _photos(n)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"image source {str(source)!r} is neither 'synthetic' nor an existing path")
    return _read_images(path)
