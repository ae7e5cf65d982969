"""Symmetries the shared gradients barely see: can an attack tell the image from its mirror image,
or from the image shifted by an eighth of its size?

The optimisation view linearises the gradient map at the image: it credits every direction in
which the gradients move.  That says nothing about a *far* image with nearly the same gradients.
Behind a global average pool the head sees sums over positions, so the mirrored or shifted image
gives gradients close to the image's own: gradient matching from the prior mean then has two (or
many) nearly equal goals and ends between them, pixel-misaligned, while the linearisation at the
true image predicts a sharp reconstruction.

For each linearisation point x (one client batch) and each transform T:

    d_T(x) = ||g(T x) - g(x)|| / ||g(mu) - g(x)||

the gradient distance of the transformed image, in units of the distance the attack must cover
from its start mu.  The model's ambiguity is the median over points of min_T d_T.  At or below
``config.SYMMETRY_DELTA`` (calibrated on the held-in networks, docs/scores.md) an attack cannot
align the image: the predicted PSNR is the prior mean's (what an attack that cannot decide between
the goals keeps).  The leakage score and the verdict are left as the linearisation says -- the
gradients still carry the image up to that symmetry, which is no reason to call a model safe.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from archscan import config
from archscan.analysis.spectrum import gradient_map


def mirror(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=(-1,))


def shift(x: torch.Tensor) -> torch.Tensor:
    """Circular shift by an eighth of the height and width (at least one pixel)."""
    h, w = x.shape[-2], x.shape[-1]
    return torch.roll(x, shifts=(max(1, h // 8), max(1, w // 8)), dims=(-2, -1))


TRANSFORMS = {"mirror": mirror, "shift": shift}


@dataclass(frozen=True)
class Symmetry:
    """Per point, the relative gradient distance of each transform; the model's median minimum."""
    distances: tuple            # one {transform: d_T} per linearisation point
    ambiguity: float            # median over points of min_T d_T
    delta: float = config.SYMMETRY_DELTA

    @property
    def ambiguous(self) -> bool:
        return self.ambiguity <= self.delta

    def to_dict(self) -> dict:
        return {"transforms": list(TRANSFORMS), "ambiguity": round(self.ambiguity, 4), "delta": self.delta,
                "ambiguous": self.ambiguous,
                "distances": [{k: round(v, 4) for k, v in d.items()} for d in self.distances]}


def symmetry(module, images: np.ndarray, labels, mu: np.ndarray, batch: int, device, fedavg=None) -> Symmetry:
    """d_T at every point of ``images`` ((k * batch, C, H, W)), each point's gradient map with its labels."""
    if images.ndim != 4:                       # not an image: no spatial symmetry to test
        return Symmetry((), float("inf"))
    model = copy.deepcopy(module).to(device=device, dtype=torch.float32).eval()
    x_all = torch.as_tensor(images, dtype=torch.float32, device=device)
    start = torch.as_tensor(np.broadcast_to(mu.reshape(images.shape[1:]), (batch,) + images.shape[1:]).copy(),
                            dtype=torch.float32, device=device)
    out = []
    for j in range(len(images) // batch):
        x = x_all[j * batch:(j + 1) * batch]
        g, _ = gradient_map(model, labels[j * batch:(j + 1) * batch], device, fedavg)
        gx = g(x).detach()
        base = float((g(start).detach() - gx).norm())
        out.append({k: float((g(T(x)).detach() - gx).norm()) / max(base, 1e-30) for k, T in TRANSFORMS.items()})
    return Symmetry(tuple(out), float(np.median([min(d.values()) for d in out])) if out else float("inf"))
