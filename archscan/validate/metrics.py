"""Image-quality metrics of reconstructions, one value per image.

Convention: images in ``[0, 1]``, PSNR with peak 1.  (Chen & Campbell and R-CONV report peak 255 on
``[0, 1]`` images, which adds 48.13 dB: never compare numbers across the two conventions.)
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity


def _as_batch(images) -> np.ndarray:
    """``B x C x H x W`` float64 numpy array from a tensor or array (a single image gets B = 1)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float64).numpy()
    images = np.asarray(images, dtype=np.float64)
    return images[None] if images.ndim == 3 else images


def mse(reconstructed, original) -> np.ndarray:
    """Mean squared error of each image pair (``B`` values)."""
    rec, ref = _as_batch(reconstructed), _as_batch(original)
    if rec.shape != ref.shape:
        raise ValueError(f"shape mismatch: {rec.shape} vs {ref.shape}")
    return ((rec - ref) ** 2).reshape(len(rec), -1).mean(axis=1)


def psnr(reconstructed, original) -> np.ndarray:
    """Peak signal-to-noise ratio in dB with peak 1, per image.

    Parameters
    ----------
    reconstructed, original : torch.Tensor or numpy.ndarray
        ``B x C x H x W`` (or ``C x H x W``) images in ``[0, 1]``.

    Returns
    -------
    numpy.ndarray
        ``B`` values; ``inf`` for identical images.
    """
    errors = mse(reconstructed, original)
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(errors)


def _window(height: int, width: int) -> int:
    """Largest odd SSIM window (at most skimage's default 7) that fits the image."""
    side = min(7, height, width)
    return side if side % 2 == 1 else side - 1


def ssim(reconstructed, original) -> np.ndarray:
    """Structural similarity per image (skimage, ``data_range=1``, channels on axis 0).

    Images smaller than 7 pixels use the largest odd window that fits (at least 3 pixels).

    Returns
    -------
    numpy.ndarray
        ``B`` values in ``[-1, 1]``.
    """
    rec, ref = _as_batch(reconstructed), _as_batch(original)
    if rec.shape != ref.shape:
        raise ValueError(f"shape mismatch: {rec.shape} vs {ref.shape}")
    win = _window(*rec.shape[-2:])
    if win < 3:
        raise ValueError(f"images of {rec.shape[-2:]} pixels are too small for SSIM")
    return np.array([structural_similarity(r, o, data_range=1.0, channel_axis=0, win_size=win)
                     for r, o in zip(rec, ref)])


def match_order(reconstructed, original) -> np.ndarray:
    """Best pairing of a batch reconstruction with the originals (batch attacks lose the order).

    Returns
    -------
    numpy.ndarray
        ``perm`` such that ``reconstructed[perm[i]]`` is paired with ``original[i]``; the pairing
        minimises the total mean squared error (Hungarian algorithm).
    """
    rec, ref = _as_batch(reconstructed), _as_batch(original)
    cost = ((rec[:, None] - ref[None]) ** 2).reshape(len(rec), len(ref), -1).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(ref), dtype=int)
    perm[cols] = rows
    return perm


def psnr_of_mse(error: float) -> float:
    """PSNR (peak 1) of a mean squared error, for predicted errors."""
    return math.inf if error <= 0 else -10.0 * math.log10(error)
