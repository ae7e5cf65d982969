"""The no-gradient baseline: every image is reconstructed as the natural-image prior's mean.

An attacker always knows the prior, so no attack worth the name ends below it.  It is also the
exact counterpart of scan's prediction for a blocked image (the prior mean in every direction the
gradients leave free), and the floor of the prediction for a partial one.  It uses the same
crops of scikit-image's bundled photographs, with the same seed, as the prediction.
"""
from __future__ import annotations

import torch

from archscan.config import PRIOR_IMAGES
from archscan.validate.attacks.base import Attack, Target


def prior_mean_image(shape: tuple, seed: int = 0, images: int = PRIOR_IMAGES, *, dtype=torch.float64,
                     device="cpu") -> torch.Tensor:
    """The per-pixel mean of ``images`` prior crops of ``shape`` (C, H, W), as a ``C x H x W`` tensor.

    The prior-mean start of the tuned attacks (``init="prior"``, ``image_start="prior"``) and the
    image :class:`PriorMean` returns.  The crops are those of :func:`archscan.prior.prior_images`
    with the same seed; note that its first crops are the centre crops of the bundled photos, so
    when validate attacks those same photos each of them is one of the ``images`` averaged.
    """
    from archscan.analysis.prior import prior_images
    X = prior_images(tuple(int(s) for s in shape), int(images), int(seed))
    return torch.as_tensor(X.mean(axis=0), dtype=dtype, device=device).view(*shape)


class PriorMean(Attack):
    """Reconstruction without gradients: the per-pixel mean of ``images`` prior crops."""

    name = "prior"
    simulates_local_steps = True   # uses no gradient at all
    defaults = {"images": PRIOR_IMAGES}

    def _run(self, target: Target, seed: int):
        mean = prior_mean_image(target.input_shape, seed, int(self.settings["images"]), dtype=target.dtype,
                                device=target.device)
        n = target.batch_size
        images = mean.view(1, *target.input_shape).expand(n, *target.input_shape).clone()
        return images, 0, target.labels, {"prior_images": int(self.settings["images"])}
