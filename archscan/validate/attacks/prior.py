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


class PriorMean(Attack):
    """Reconstruction without gradients: the per-pixel mean of ``images`` prior crops."""

    name = "prior"
    defaults = {"images": PRIOR_IMAGES}

    def _run(self, target: Target, seed: int):
        from archscan.analysis.prior import prior_images
        X = prior_images(tuple(target.input_shape), int(self.settings["images"]), seed)
        mean = torch.as_tensor(X.mean(axis=0), dtype=target.dtype, device=target.device)
        n = target.batch_size
        images = mean.view(1, *target.input_shape).expand(n, *target.input_shape).clone()
        return images, 0, target.labels, {"prior_images": int(X.shape[0])}
