"""The analysis stage: per-layer systems and exact ranks, propagation to the image, scores,
and the optimisation-attack view (local identifiability)."""
