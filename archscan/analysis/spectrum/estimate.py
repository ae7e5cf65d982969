"""What an optimisation attack resolves, from one Lanczos run: weak-energy fractions of the prior
samples at a threshold, their bounds, and the number of recoverable directions.

Near the true image an attack matching gradients sees x' - x only through A = JᵀJ.  With a
threshold t on A's eigenvalues (the attack's resolution) and a centred prior sample v:

* soft:     E(v) = vᵀ t² (A + tI)^-2 v   the bias of a damped Gauss-Newton (Tikhonov) solve with
                                         damping t -- archscan's prediction (smooth in lambda, so
                                         Gauss quadrature converges fast, with two-sided bounds);
* hard:     E(v) = ||P_{lambda < t} v||²  energy in the weak eigen-directions (slow to converge);
* tikhonov: E(v) = vᵀ t (A + tI)^-1 v.

The threshold is t = tau² * reference, the reference being lambda_max of A at the sample's image
("lambda_max") or the gradient's own scale ||g||² / ||v||² ("gradient").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from archscan.analysis.spectrum.lanczos import LanczosRun
from archscan.analysis.spectrum.quadrature import (
    cms_bracket,
    row_fractions,
    sample_quadrature,
)

REFERENCES = ("lambda_max", "gradient")


@dataclass(frozen=True)
class Bracket:
    """A point estimate with bounds; floats (model level) or (k,) arrays (per sample)."""

    estimate: float | np.ndarray
    lo: float | np.ndarray
    hi: float | np.ndarray


@dataclass(frozen=True)
class SpectrumEstimate:
    """Weak-energy fractions predicted for one model and prior, at one tau.

    Attributes
    ----------
    tau, reference : float, str
        The threshold t_i = tau² * reference_i of each sample.
    thresholds : ndarray (k,)
    lambda_max, lambda_max_residual : float
        Largest Ritz value over all rows (a lower bound on the largest lambda_max of the points)
        and its Ritz residual: some eigenvalue lies within it.
    hard, soft, tikhonov : Bracket of (k,) arrays
        Per-sample fractions E(v_i)/||v_i||² (hard: interpolated Gauss CDF in the CMS bracket;
        soft / tikhonov: Gauss estimate and lower bound, Gauss-Radau upper bound).
    overall_hard, overall_soft, overall_tikhonov : Bracket of floats
        sum_i E(v_i) / sum_i ||v_i||².
    hard_std, soft_std, hard_change, soft_change : float
        Spread across samples; overall estimate at m steps minus the one at m // 2 (convergence).
    psnr_hard, psnr_soft : Bracket of floats
        -10 log10(MSE), MSE = mean_i E(v_i) / n (images in [0, 1]); lo from the upper error bound.
    directions : Bracket of floats or None
        Eigenvalues above the threshold, n * mean over random probes of mu_probe[t, inf), at the
        first point (None without probes).
    sample_index, steps, products, seconds, dtype, notes
    """

    tau: float
    reference: str
    thresholds: np.ndarray
    lambda_max: float
    lambda_max_residual: float
    hard: Bracket
    soft: Bracket
    tikhonov: Bracket
    overall_hard: Bracket
    overall_soft: Bracket
    overall_tikhonov: Bracket
    hard_std: float
    soft_std: float
    hard_change: float
    soft_change: float
    psnr_hard: Bracket
    psnr_soft: Bracket
    directions: Bracket | None
    sample_index: np.ndarray
    steps: np.ndarray
    products: int
    seconds: float
    dtype: str
    notes: tuple


def _references(run: LanczosRun, quads: list, reference: str) -> np.ndarray:
    """The reference eigenvalue scale of every row (its point's lambda_max, or ||g||² / ||v||²)."""
    if reference == "gradient":
        return run.grad_sq_norms / np.where(run.sq_norms > 0, run.sq_norms, 1.0)
    top = np.array([q["nodes"][-1] for q in quads])
    per_point = {p: top[run.points == p].max() for p in np.unique(run.points)}
    return np.array([per_point[p] for p in run.points])


def noise_floors(run: LanczosRun, noise_sq, target: LanczosRun | None = None) -> np.ndarray | None:
    """Per row, a defence's noise floor in eigenvalue units: s² n / ||v||² (s² the noise variance
    per gradient coordinate, ||v||² / n the prior's variance per image direction).

    ``noise_sq``: None (no noise) or a callable of ||g||² giving s², the noise in the units of the
    client's gradient at its own image: ``target``'s row of the same sample (default ``run``)
    gives that ||g||², so the view from the attacks' start sees the target's noise."""
    if noise_sq is None:
        return None
    target = run if target is None else target
    by_sample = {int(i): noise_sq(float(g)) for i, g in zip(target.sample_index, target.grad_sq_norms)}
    s2 = np.array([by_sample.get(int(i), 0.0) for i in run.sample_index])
    return s2 * run.n / np.where(run.sq_norms > 0, run.sq_norms, 1.0)


def _table(run: LanczosRun, tau: float, m: np.ndarray, reference: str, floors: np.ndarray | None = None):
    """Per-row (estimate, lo, hi) of every fraction, the rows' thresholds, lambda_max and residual."""
    quads = [sample_quadrature(run.alpha[i], run.beta[i], int(m[i]), run.n) for i in range(len(m))]
    i_top = int(np.argmax([q["nodes"][-1] for q in quads]))
    lam, res = float(quads[i_top]["nodes"][-1]), float(quads[i_top]["residuals"][-1])
    t = tau ** 2 * _references(run, quads, reference)
    if lam <= 0:                      # A = 0: the gradients do not depend on the image at all
        return {k: np.ones((len(m), 3)) for k in ("hard", "soft", "tikhonov")}, t, 0.0, 0.0, quads
    floors = np.zeros(len(m)) if floors is None else floors
    rows = [row_fractions(q, ti, run.noise * lam, fi) for q, ti, fi in zip(quads, t, floors)]
    return {key: np.array([r[key] for r in rows]) for key in ("hard", "soft", "tikhonov")}, t, lam, res, quads


def psnr(fraction: float, mean_sq_norm: float, n: int) -> float:
    """PSNR (dB, images in [0, 1]) of an error that is ``fraction`` of the prior energy."""
    mse = fraction * mean_sq_norm / n
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def _overall(table: np.ndarray, w: np.ndarray) -> Bracket:
    """Energy-weighted model-level bracket from per-row (estimate, lo, hi)."""
    e, lo, hi = (float(np.dot(w, table[:, c]) / w.sum()) for c in range(3))
    return Bracket(e, lo, hi)


def _psnr_bracket(b: Bracket, sq_norms: np.ndarray, n: int) -> Bracket:
    ms = float(sq_norms.mean())
    return Bracket(psnr(b.estimate, ms, n), psnr(b.hi, ms, n), psnr(b.lo, ms, n))


def _directions(probe: LanczosRun | None, tau: float, reference_run: LanczosRun, reference: str,
                floors: np.ndarray | None = None) -> Bracket | None:
    """n * mu_probe[t, inf) averaged over random probes (stochastic Lanczos quadrature); a noise
    floor (the samples' median) raises t."""
    if probe is None or not len(probe.steps):
        return None
    quads = [sample_quadrature(probe.alpha[i], probe.beta[i], int(probe.steps[i]), probe.n)
             for i in range(len(probe.steps))]
    if reference == "gradient":
        t = tau ** 2 * float(np.median(reference_run.grad_sq_norms / reference_run.sq_norms))
    else:
        t = tau ** 2 * max(q["nodes"][-1] for q in quads)
    t += 0.0 if floors is None or not len(floors) else float(np.median(floors))
    below = np.array([cms_bracket(q["nodes"], q["weights"], t, exact=q["exact"]) for q in quads])
    above = 1.0 - below.mean(axis=0)            # (estimate, hi-of-below -> lo-of-above, ...)
    return Bracket(probe.n * above[0], probe.n * above[2], probe.n * above[1])


def weak_fractions(run: LanczosRun, tau: float, steps: int | None = None, reference: str = "lambda_max",
                   probe: LanczosRun | None = None, floors: np.ndarray | None = None) -> SpectrumEstimate:
    """Evaluate the soft / hard / tikhonov weak fractions of a Lanczos run at one tau.

    ``steps`` uses only the first ``steps`` Lanczos steps of every row (what a shorter run would
    give); ``probe`` is a run from random vectors for the count of recoverable directions;
    ``floors`` a defence's noise floor per row (:func:`noise_floors`).
    """
    if reference not in REFERENCES:
        raise ValueError(f"reference {reference!r}: expected one of {REFERENCES}")
    m = run.steps if steps is None else np.minimum(run.steps, steps)
    table, t, lam, res, _ = _table(run, tau, m, reference, floors)
    half = _table(run, tau, np.maximum(m // 2, 1), reference, floors)[0]
    w = run.sq_norms
    ov = {key: _overall(table[key], w) for key in table}
    ov_half = {key: _overall(half[key], w) for key in half}
    per = {key: Bracket(*(table[key][:, c].copy() for c in range(3))) for key in table}
    notes = run.notes + (("A = 0: the gradients do not depend on the image",) if lam <= 0 else ())
    return SpectrumEstimate(
        tau=tau, reference=reference, thresholds=t, lambda_max=lam, lambda_max_residual=res,
        hard=per["hard"], soft=per["soft"], tikhonov=per["tikhonov"],
        overall_hard=ov["hard"], overall_soft=ov["soft"], overall_tikhonov=ov["tikhonov"],
        hard_std=float(table["hard"][:, 0].std()), soft_std=float(table["soft"][:, 0].std()),
        hard_change=ov["hard"].estimate - ov_half["hard"].estimate,
        soft_change=ov["soft"].estimate - ov_half["soft"].estimate,
        psnr_hard=_psnr_bracket(ov["hard"], w, run.n), psnr_soft=_psnr_bracket(ov["soft"], w, run.n),
        directions=_directions(probe, tau, run, reference, floors),
        sample_index=run.sample_index, steps=m.copy(), products=run.products + (probe.products if probe else 0),
        seconds=run.seconds + (probe.seconds if probe else 0.0), dtype=run.dtype, notes=notes)


@dataclass(frozen=True)
class Worst:
    """Per sample, the larger weak fraction of several views of it (the target's and the start's
    spectrum): what all of them resolve.  Samples present in every estimate only."""

    sample_index: np.ndarray
    fractions: Bracket        # (k,) arrays
    overall: Bracket          # energy-weighted
    sq_norms: np.ndarray


def worst_of(ests: list, sq_norms: list, functional: str = "soft") -> Worst:
    """Combine estimates of the same samples (``sq_norms[i]`` of ``ests[i]``'s rows) per sample."""
    common = sorted(set.intersection(*(set(e.sample_index.tolist()) for e in ests)))
    cols = []
    for e in ests:
        pos = {int(s): i for i, s in enumerate(e.sample_index)}
        b = getattr(e, functional)
        rows = [pos[s] for s in common]
        cols.append(np.stack([b.estimate[rows], b.lo[rows], b.hi[rows]], axis=1))
    table = np.max(cols, axis=0)
    pos0 = {int(s): i for i, s in enumerate(ests[0].sample_index)}
    w = np.asarray(sq_norms[0])[[pos0[s] for s in common]]
    per = Bracket(table[:, 0], table[:, 1], table[:, 2])
    return Worst(np.asarray(common), per, _overall(table, w), w)
