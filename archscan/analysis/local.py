"""The optimisation-attack view: what gradient matching (Inverting Gradients, DLG) recovers, from
the spectrum of A = JᵀJ, J = d(shared gradients)/d(image), at natural images.

The layer-by-layer chain (R-GAP's view) stops where an upper layer is only partly determined; an
optimisation attack works on the whole nonlinear system at once and, near the true image, sees an
image direction in proportion to how much it moves the gradients.  Each prior sample x_i is seen
from its own image (J at x_i, label i mod classes); the predicted error is the bias of a damped
Gauss-Newton solve with the attack's resolution t_i = tau² * reference_i as damping (``spectrum``),
with tau and the reference calibrated against the strongest attacks archscan runs (docs/scores.md).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np
import torch

from archscan import config
from archscan.analysis import memory
from archscan.analysis.prior import prior_images
from archscan.analysis.scores import psnr_of
from archscan.analysis.spectrum import GramOperator, Spectrum, lanczos, probe_vectors
from archscan.analysis.verdict import ChainView, OptimisationView, Quality
from archscan.terms import Verdict, ViewStatus

__all__ = ["optimisation_view", "spectrum_at_prior"]


def optimisation_view(module, options, shape, chain: ChainView, activations: int = 0) -> OptimisationView:
    """Run the optimisation-attack view as ``options.local`` asks; a view that cannot run says why.

    ``activations``: entries of every traced tensor of one forward pass, for the memory estimate.
    """
    if options.local == "off":
        return OptimisationView(ViewStatus.OFF, "--local off: the optimisation-attack view was switched off")
    if options.local == "auto" and chain.quality.verdict == Verdict.LEAKS:
        return OptimisationView(ViewStatus.NOT_NEEDED, "the layer chain already determines the image")
    if module is None:
        return OptimisationView(ViewStatus.FAILED, "a .pt2 program is not differentiated by this version")
    try:
        with threads(torch.device(options.device).type):
            spec, plan = spectrum_at_prior(module, options, shape, activations)
    except memory.OverBudget as e:
        return OptimisationView(ViewStatus.SKIPPED, str(e))
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return OptimisationView(ViewStatus.FAILED, f"the gradient map cannot be differentiated twice: "
                                f"{type(e).__name__}: {first}")
    if not len(spec.samples.steps):
        return OptimisationView(ViewStatus.SKIPPED, f"not one Lanczos step fits the {plan['budget_s']:.0f} s budget",
                                details=plan)
    return view_of(spec, plan)


@contextmanager
def threads(device_type: str):
    """Half the cores for the products on CPU unless OMP_NUM_THREADS says otherwise: the many small
    products of the view lose more to oversubscription on a shared machine than threads give."""
    before = torch.get_num_threads()
    if device_type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _labels(module, images: np.ndarray) -> list[int]:
    with torch.no_grad():
        classes = module.eval()(torch.as_tensor(images[:1], dtype=torch.float32)).shape[-1]
    return [i % max(1, classes) for i in range(len(images))]


def spectrum_at_prior(module, options, shape, activations: int = 0) -> tuple[Spectrum, dict]:
    """Lanczos from centred prior samples x_i - mu, at x_i (the target) and at mu (where attacks
    start: mid-grey or the prior mean), then from random probes, within the time budget."""
    start = time.perf_counter()
    device = torch.device(getattr(options, "device", "cpu") or "cpu")
    X = prior_images(tuple(shape), config.LOCAL_SAMPLES, options.seed)
    k = memory.points_that_fit(module, X.shape[1], activations, config.LOCAL_SAMPLES, config.LOCAL_STEPS, device,
                               views=2)
    mu = X.mean(axis=0)
    V = (X - mu)[:k]
    labels = _labels(module, X[:k].reshape(k, *shape))
    target = GramOperator(module, X[:k].reshape(k, *shape), labels, dtype=torch.float32, device=device)
    at_mu = GramOperator(module, np.repeat(mu[None], k, 0).reshape(k, *shape), labels, dtype=torch.float32,
                         device=device)
    budget = _budget(target, options, start)
    share = (1 - config.LOCAL_PROBE_SHARE) / 2
    runs = []
    for op in (target, at_mu):
        until = budget * share * (len(runs) + 1) - (time.perf_counter() - start)
        runs.append(lanczos(op, V, config.LOCAL_STEPS, max(until, 0.0), batch=None, seed=options.seed,
                            setup_seconds=time.perf_counter() - start))
    left = budget - (time.perf_counter() - start)
    probe = lanczos(target, probe_vectors(config.LOCAL_PROBES, target.n, options.seed), config.LOCAL_STEPS, left,
                    batch=None, seed=options.seed, min_steps=2) if left > 0 else None
    plan = {"budget_s": round(budget, 1), "points": k, "device": str(device), "dtype": "float32",
            "seconds_per_product": round(runs[0].seconds_per_product, 4)}
    return Spectrum(runs[0], probe, runs[1]), plan


def _budget(op: GramOperator, options, start: float) -> float:
    """The given --local-budget, or what LOCAL_MIN_PRODUCTS products need (timed on one), within
    [LOCAL_BUDGET_MIN_S, LOCAL_BUDGET_MAX_S]."""
    if options.local_budget is not None:
        return float(options.local_budget)
    v = torch.as_tensor(probe_vectors(1, op.n, options.seed))
    op(v)                      # the first product pays one-off costs (dispatch caches, allocator)
    t0 = time.perf_counter()
    op(v)
    per = time.perf_counter() - t0
    need = (time.perf_counter() - start) + config.LOCAL_MIN_PRODUCTS * per * 1.25
    return float(min(config.LOCAL_BUDGET_MAX_S, max(config.LOCAL_BUDGET_MIN_S, need)))


def view_of(spec: Spectrum, plan: dict) -> OptimisationView:
    """The view's figures at the calibrated tau, reference and functional: per sample the larger
    error of the target's and the start's spectrum."""
    est = spec.at(config.LOCAL_TAU, config.LOCAL_REFERENCE)
    worst = spec.worst(config.LOCAL_TAU, config.LOCAL_REFERENCE, config.LOCAL_FUNCTIONAL)
    frac, n = worst.overall, spec.samples.n
    ms = float(worst.sq_norms.mean())
    mse = float(frac.estimate * ms / n)
    quality = Quality(round(1.0 - frac.estimate, 6), mse, round(psnr_of(mse), 3),
                      f"spectrum of d(gradients)/d(image) at the image and at the prior mean: "
                      f"{config.LOCAL_FUNCTIONAL} weak energy at tau = {config.LOCAL_TAU} x {config.LOCAL_REFERENCE}",
                      len(worst.sample_index))
    psnr_lo, psnr_hi = (psnr_of(float(e * ms / n)) for e in (frac.hi, frac.lo))
    d = est.directions
    directions = None if d is None else {"estimate": int(round(d.estimate)), "lo": int(round(d.lo)),
                                         "hi": int(round(d.hi)), "of": n}
    return OptimisationView(ViewStatus.RAN, quality=quality,
                            leakage_interval=(round(1 - frac.hi, 6), round(1 - frac.lo, 6)),
                            psnr_interval=(round(psnr_lo, 3), round(psnr_hi, 3)), directions=directions,
                            details=_details(est, spec, worst, plan))


def _details(est, spec: Spectrum, worst, plan: dict) -> dict:
    """How the figure was obtained and how far to trust it."""
    runs = [r for r in (spec.samples, spec.start) if r is not None]
    steps = np.concatenate([r.steps for r in runs]) if runs else np.zeros(1, int)
    return {"method": "Lanczos quadrature of A = JᵀJ from each prior sample, at its image and at the prior mean",
            "tau": config.LOCAL_TAU, "reference": config.LOCAL_REFERENCE, "functional": config.LOCAL_FUNCTIONAL,
            "samples": int(len(worst.sample_index)), "steps": [int(steps.min()), int(steps.max())],
            "products": int(sum(r.products for r in runs) + (spec.probes.products if spec.probes else 0)),
            "seconds": round(sum(r.seconds for r in runs) + (spec.probes.seconds if spec.probes else 0.0), 2),
            "lambda_max": float(f"{est.lambda_max:.6g}"), "lambda_max_residual": float(f"{est.lambda_max_residual:.3g}"),
            "spread": round(float(worst.fractions.estimate.std()), 4), **plan,
            "notes": sorted(set(n for r in runs for n in r.notes))}
