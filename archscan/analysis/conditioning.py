"""Conditioning of each small layer's stacked system for the given weights and a probe gradient."""
from __future__ import annotations

import numpy as np
from archscan_kernels import conditioning, forward_matrix, gradient_matrix

from archscan import config
from archscan.layers import REGISTRY


def layer_conditioning(system, captured: dict | None) -> dict | None:
    """sigma_min, sigma_max and condition number of [W; K] with the model's own values."""
    entry = (captured or {}).get(system.node.module_path)
    geom = system.geometry
    if entry is None or geom.unknowns > config.DENSE_PROJECTOR_MAX:
        return None
    w = entry["weight"].reshape(geom.F, geom.Cg, geom.kh, geom.kw)
    g = REGISTRY[system.node.kind].output_gradient(entry["grad_out"], geom)
    U = np.vstack([forward_matrix(geom, w), gradient_matrix(geom, g)])
    return {**conditioning(U, 3), "probe": "first prior image, label 0"}
