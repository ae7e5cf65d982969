"""Tests of the offline image sources and the per-image metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.io
import torch

from archscan.images import load_images
from archscan.validate.metrics import match_order, psnr, psnr_of_mse, ssim

torch.set_num_threads(1)


def test_default_photos_shape_range_names():
    images, names = load_images(None, 3, (3, 16, 12), seed=0)
    assert images.shape == (3, 3, 16, 12) and images.dtype == torch.float32
    assert names == ["astronaut", "coffee", "chelsea"]
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert float(images.std()) > 0.05  # real content, not a flat image


def test_grey_models_and_extra_seeded_crops():
    grey, names = load_images(None, 2, (1, 8, 8))
    assert grey.shape == (2, 1, 8, 8)
    many, names = load_images(None, 25, (3, 8, 8), seed=1, dtype=torch.float64)
    again, _ = load_images(None, 25, (3, 8, 8), seed=1, dtype=torch.float64)
    other, _ = load_images(None, 25, (3, 8, 8), seed=2, dtype=torch.float64)
    assert len(names) == 25 and len(set(names)) == 25 and torch.equal(many, again)
    assert not torch.equal(many[-1], other[-1])  # extras are seeded crops
    assert torch.equal(many[:5], other[:5])  # the photos themselves do not depend on the seed


def test_synthetic_is_seeded_and_smooth():
    a, names = load_images("synthetic", 2, (3, 16, 16), seed=3)
    b, _ = load_images("synthetic", 2, (3, 16, 16), seed=3)
    c, _ = load_images("synthetic", 2, (3, 16, 16), seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c) and names == ["synthetic-0", "synthetic-1"]
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert float((a[..., 1:] - a[..., :-1]).abs().mean()) < 0.2  # smooth (uniform noise: 0.33)


def test_directory_source(tmp_path):
    rng = np.random.default_rng(0)
    skimage.io.imsave(tmp_path / "b.png", (rng.random((20, 30, 3)) * 255).astype(np.uint8))
    skimage.io.imsave(tmp_path / "a.png", (rng.random((10, 10)) * 255).astype(np.uint8))
    (tmp_path / "broken.jpg").write_text("not an image")
    images, names = load_images(tmp_path, 2, (3, 8, 8))
    assert names == ["a.png", "b.png"] and images.shape == (2, 3, 8, 8)
    assert torch.equal(images[0, 0], images[0, 1])  # grey file repeated over RGB


def test_bad_sources_raise_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable PNG/JPEG image"):
        load_images(tmp_path, 1, (3, 8, 8))
    with pytest.raises(ValueError, match="neither 'synthetic' nor an existing path"):
        load_images(tmp_path / "missing", 1, (3, 8, 8))
    with pytest.raises(ValueError):
        load_images(None, 0, (3, 8, 8))


def test_psnr_peak_one_per_image():
    x = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    y = x.clone()
    y[1] += 0.1  # mse 0.01 -> 20 dB with peak 1
    values = psnr(y, x)
    assert values.shape == (2,) and math.isinf(values[0]) and values[1] == pytest.approx(20.0)
    assert psnr_of_mse(0.01) == pytest.approx(20.0)


def test_ssim_per_image_and_small_images():
    images, _ = load_images(None, 2, (3, 16, 16), dtype=torch.float64)
    noisy = (images + 0.2 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0),
                                        dtype=torch.float64)).clamp(0, 1)
    values = ssim(noisy, images)
    assert values.shape == (2,) and np.all(values < 0.95) and np.allclose(ssim(images, images), 1)
    assert ssim(images[:, :, :5, :5], images[:, :, :5, :5]).shape == (2,)  # window shrinks to 5
    grey = ssim(images[:, :1], images[:, :1])
    assert np.allclose(grey, 1)


def test_match_order_recovers_permutation():
    images, _ = load_images(None, 4, (3, 8, 8))
    shuffled = images[[2, 0, 3, 1]]
    perm = match_order(shuffled, images)
    assert torch.equal(shuffled[perm], images)


def test_spearman_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    from archscan.validate.zoo import spearman, spearman_interval
    xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    ys = [1.2, 1.9, 3.5, 3.1, 5.2, 6.8, 6.1, 8.4, 9.0, 9.9]
    a, b = spearman_interval(xs, ys, seed=3), spearman_interval(xs, ys, seed=3)
    assert a == b and a[0] <= spearman(xs, ys) <= a[1] <= 1.0
    assert spearman_interval(xs[:3], ys[:3]) is None
    noisy = spearman_interval(xs, [5, 1, 9, 2, 8, 3, 7, 4, 6, 10], seed=3)
    assert noisy[1] - noisy[0] > a[1] - a[0]          # weaker agreement, wider interval
