"""Matrix-free spectrum of the gradient map: what optimisation attacks (Inverting Gradients, DLG)
can resolve of an image, from products with A = JᵀJ only (J = d(shared gradients)/d(image)).

``operator.py`` applies A, ``lanczos.py`` runs Lanczos from each prior sample within a budget,
``quadrature.py`` turns the coefficients into Gauss / Gauss-Radau / Chebyshev-Markov-Stieltjes
estimates and bounds, ``estimate.py`` into weak-energy fractions and PSNR.  docs/scores.md gives
the definitions and docs/theory.md the reasoning.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from archscan.analysis.spectrum.estimate import (
    REFERENCES,
    Bracket,
    SpectrumEstimate,
    Worst,
    noise_floors,
    psnr,
    weak_fractions,
    worst_of,
)
from archscan.analysis.spectrum.lanczos import MIN_STEPS, LanczosRun, lanczos
from archscan.analysis.spectrum.operator import GramOperator, gradient_map

__all__ = ["REFERENCES", "Bracket", "GramOperator", "LanczosRun", "SpectrumEstimate", "Spectrum", "estimate",
           "Worst", "gradient_map", "lanczos", "noise_floors", "probe_vectors", "psnr", "run_spectrum", "weak_fractions", "worst_of"]

PROBE_SHARE = 0.2   # share of the budget the direction-count probes may use


def probe_vectors(k: int, n: int, seed: int) -> np.ndarray:
    """k seeded Rademacher vectors (stochastic trace estimation)."""
    return np.random.default_rng([seed, 7]).choice([-1.0, 1.0], size=(k, n))


class Spectrum:
    """The Lanczos runs of one scan (prior samples at their own images, optionally the same samples
    seen from the attacks' start image, and probes); any tau is evaluated from them."""

    def __init__(self, samples: LanczosRun, probes: LanczosRun | None, start: LanczosRun | None = None):
        self.samples, self.probes, self.start = samples, probes, start

    def at(self, tau: float, reference: str = "lambda_max", steps: int | None = None,
           noise_sq=None) -> SpectrumEstimate:
        """The estimate at ``tau``; ``noise_sq(||g||²)``: a defence's noise variance (or None)."""
        return weak_fractions(self.samples, tau, steps, reference, self.probes, noise_floors(self.samples, noise_sq))

    def worst(self, tau: float, reference: str, functional: str, noise_sq=None) -> Worst:
        """Per sample, what both the target's and the start's spectrum resolve."""
        runs = [r for r in (self.samples, self.start) if r is not None and len(r.steps)]
        ests = [weak_fractions(r, tau, reference=reference, floors=noise_floors(r, noise_sq, self.samples))
                for r in runs]
        return worst_of(ests, [r.sq_norms for r in runs], functional)


def run_spectrum(model, images, labels, samples, steps: int = 80, budget_s: float | None = None,
                 dtype=torch.float32, device="cpu", seed: int = 0, batch: int | None = None,
                 mode: str = "auto", min_steps: int = MIN_STEPS, probes: int = 2) -> Spectrum:
    """Lanczos from every centred prior sample ``samples[i]`` at its own image ``images[i]`` (or
    at one image for all), then from ``probes`` random vectors at the first image.

    The budget (seconds, counted from the call, building the gradient graphs included) is shared:
    the probes get what the samples left, at most ``PROBE_SHARE`` of it.
    """
    start = time.perf_counter()
    op = GramOperator(model, images, labels, dtype=dtype, device=device, mode=mode)
    setup = time.perf_counter() - start
    sample_budget = None if budget_s is None else budget_s * (1 - PROBE_SHARE if probes else 1.0)
    run = lanczos(op, samples, steps, sample_budget, batch, seed, min_steps=min_steps, start=start,
                  setup_seconds=setup)
    probe_run = None
    if probes:
        left = None if budget_s is None else budget_s - (time.perf_counter() - start)
        if left is None or left > 0:
            probe_run = lanczos(op, probe_vectors(probes, op.n, seed), steps, left, batch, seed, min_steps=2)
    return Spectrum(run, probe_run)


def estimate(model, images, labels, samples, tau, reference: str = "lambda_max", **kwargs):
    """One estimate (or a list, one per tau) -- see :func:`run_spectrum` for the keywords."""
    spec = run_spectrum(model, images, labels, samples, **kwargs)
    if np.ndim(tau) == 0:
        return spec.at(float(tau), reference)
    return [spec.at(float(t), reference) for t in tau]
