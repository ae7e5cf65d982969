"""Gradient-inversion attacks behind ``archscan validate``.

Every attack takes a :class:`~archscan.attacks.base.Target` (model, shared gradients, optional
labels) and returns a :class:`~archscan.attacks.base.Reconstruction`:

* ``analytic`` - exact division through a Linear-with-bias layer reading the image;
* ``rgap``     - R-GAP recursive closed form for chain models and concatenated conv branches
  (ReLU handled as in R-CONV);
* ``hybrid``   - R-GAP refined per layer by gradient matching (Chen & Campbell 2022);
* ``ig``       - Inverting Gradients (cosine matching + TV, Adam);
* ``dlg``      - DLG / iDLG (L2 matching, L-BFGS);
* ``prior``    - the no-gradient baseline: the natural-image prior's mean (the floor any attacker
  reaches, and what scan predicts for a blocked image);
* ``april``    - APRIL: a positional embedding's gradient gives the patch-embedding conv's output
  gradient, whose weight gradient then determines the image.
"""
from __future__ import annotations

from archscan.validate.attacks.analytic import (
    AnalyticAttack,
    infer_labels,
    linear_input,
)
from archscan.validate.attacks.april import AprilAttack
from archscan.validate.attacks.base import (
    Attack,
    Reconstruction,
    Target,
    make_target,
    observe_gradients,
)
from archscan.validate.attacks.dlg import DLG
from archscan.validate.attacks.hybrid import HybridAttack
from archscan.validate.attacks.ig import InvertingGradients
from archscan.validate.attacks.prior import PriorMean
from archscan.validate.attacks.rgap import RGAPAttack

ATTACKS = {
    "analytic": AnalyticAttack,
    "rgap": RGAPAttack,
    "hybrid": HybridAttack,
    "ig": InvertingGradients,
    "dlg": DLG,
    "april": AprilAttack,
    "prior": PriorMean,
}


def get_attack(name: str, **settings) -> Attack:
    """Instantiate the attack registered as ``name`` with optional ``settings``.

    Raises
    ------
    ValueError
        If ``name`` is not a registered attack.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name](**settings)


__all__ = ["ATTACKS", "Attack", "Reconstruction", "Target", "get_attack", "infer_labels",
           "linear_input", "make_target", "observe_gradients"]
