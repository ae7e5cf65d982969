"""The symmetry check: the relative gradient distance of the mirrored / shifted image, against
models whose answer is known exactly."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from archscan.analysis.prior import prior_images
from archscan.analysis.symmetry import TRANSFORMS, mirror, shift, symmetry

SHAPE = (3, 16, 16)


def _run(model, k=3):
    X = prior_images(SHAPE, 6, 0)
    images = X[:k].reshape(k, *SHAPE)
    return symmetry(model, images, [i % 4 for i in range(k)], X.mean(axis=0), 1, torch.device("cpu"))


def test_transforms_are_a_mirror_and_an_eighth_shift():
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(1, 2, 16, 16)
    assert torch.equal(mirror(x)[..., 0], x[..., -1]) and torch.equal(mirror(mirror(x)), x)
    assert torch.equal(shift(x)[..., 2, 2], x[..., 0, 0]) and set(TRANSFORMS) == {"mirror", "shift"}


def test_a_global_mean_head_cannot_tell_any_permutation_apart():
    torch.manual_seed(0)
    pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    sym = _run(pooled)
    assert sym.ambiguity < 1e-5 and sym.ambiguous


def test_a_flattening_head_tells_them_apart():
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    sym = _run(flat)
    assert sym.ambiguity > 0.5 and not sym.ambiguous
    d = sym.distances[0]
    # a reference by hand: the distance of the mirrored image's gradient, relative to the start's
    X = prior_images(SHAPE, 6, 0)
    x, mu = (torch.tensor(v.reshape(1, *SHAPE), dtype=torch.float32) for v in (X[0], X.mean(axis=0)))

    def grads(img):
        flat.zero_grad()
        nn.functional.cross_entropy(flat(img), torch.tensor([0]), reduction="sum").backward()
        return torch.cat([p.grad.flatten() for p in flat.parameters()])
    ref = float((grads(torch.flip(x, (-1,))) - grads(x)).norm() / (grads(mu) - grads(x)).norm())
    assert np.isclose(d["mirror"], ref, rtol=1e-4)


def test_not_an_image_has_no_symmetry_to_test():
    sym = symmetry(nn.Linear(5, 2), np.zeros((2, 5)), [0, 1], np.zeros(5), 1, torch.device("cpu"))
    assert sym.distances == () and not sym.ambiguous
