"""Calibration of the optimisation view: its resolution tau (and the threshold's reference and the
weak-energy functional) fitted to what the strongest attacks archscan runs actually achieve.

For every attacked image x the spectrum is taken at x itself (J at x, the label the client used),
started from x - mu with mu the prior mean the attacks fall back to; a Lanczos run keeps only its
recurrence coefficients, so every (tau, reference, functional) of the grid is evaluated from the
same run.  Models carry ``calibration = "held-in"`` or ``"held-out"`` in the manifest: tau is
chosen on the held-in models only, and both sets are reported.  ``benchmarks/calibrate_local.py``
runs it as one command.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch

from archscan import config
from archscan.analysis.prior import prior_images
from archscan.analysis.spectrum import GramOperator, LanczosRun, lanczos, weak_fractions
from archscan.analysis.spectrum.estimate import worst_of
from archscan.validate.zoo import QUALITY_CEILING_DB, spearman

FUNCTIONALS = ("soft", "tikhonov", "hard")
TAUS = tuple(float(f"{t:.3g}") for t in np.geomspace(1e-3, 0.3, 21))
WITHIN_DB = 4.0          # the target: predicted within 4 dB of the best achieved


def spectra_at_images(model, images: torch.Tensor, labels, seed: int, steps: int = 60) -> dict:
    """Lanczos from x_i - mu, at x_i (the target) and at mu (where the attacks start), for every
    attacked image (no time budget: accuracy first)."""
    shape = tuple(images.shape[1:])
    mu = prior_images(shape, config.PRIOR_IMAGES, seed).mean(axis=0)
    X = images.detach().double().reshape(len(images), -1).numpy()
    labels = [int(v) for v in labels]
    at_x = GramOperator(model, X.reshape(len(X), *shape), labels, dtype=torch.float32)
    at_mu = GramOperator(model, np.repeat(mu[None], len(X), 0).reshape(len(X), *shape), labels, dtype=torch.float32)
    return {"target": lanczos(at_x, X - mu, steps, None, batch=1, seed=seed),
            "start": lanczos(at_mu, X - mu, steps, None, batch=1, seed=seed)}


def run_to_dict(run: LanczosRun) -> dict:
    d = asdict(run)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def run_from_dict(d: dict) -> LanczosRun:
    arrays = ("alpha", "beta", "steps", "sq_norms", "points", "grad_sq_norms", "sample_index")
    return LanczosRun(**{k: (np.asarray(v) if k in arrays else (tuple(v) if k == "notes" else v)) for k, v in d.items()})


def predicted_per_image(runs: dict, tau: float, reference: str, functional: str) -> np.ndarray:
    """Predicted PSNR of every attacked image: what both the target's and the start's spectrum
    resolve (``spectrum.worst_of``), in the order of the images given."""
    order = [runs[k] for k in ("target", "start")]
    w = worst_of([weak_fractions(r, tau, reference=reference) for r in order], [r.sq_norms for r in order], functional)
    mse = w.fractions.estimate * w.sq_norms / order[0].n
    return np.array([min(-10 * math.log10(m), config.PSNR_CAP) if m > 0 else config.PSNR_CAP for m in mse])


def _clip(v):
    return np.minimum(np.asarray(v, dtype=float), QUALITY_CEILING_DB)


def model_prediction(row: dict, tau: float, reference: str, functional: str) -> float:
    """The model's predicted PSNR: the median over its images, the chain's when that is higher."""
    opt = float(np.median(predicted_per_image(row["runs"], tau, reference, functional)))
    return max(opt, row.get("chain_psnr") or 0.0)


def score(rows: list[dict], tau: float, reference: str, functional: str) -> dict:
    """Agreement of predicted and achieved PSNR (both clipped at the 8-bit ceiling) over ``rows``."""
    pred = _clip([model_prediction(r, tau, reference, functional) for r in rows])
    best = _clip([r["achieved_psnr"] for r in rows])
    err = pred - best
    return {"tau": tau, "reference": reference, "functional": functional, "models": len(rows),
            "within": float(np.mean(np.abs(err) <= WITHIN_DB)) if len(rows) else None,
            "mean_abs_db": float(np.mean(np.abs(err))) if len(rows) else None,
            "bias_db": float(np.mean(err)) if len(rows) else None,
            "spearman": spearman(list(pred), list(best)), "errors": [round(float(e), 2) for e in err]}


def fit(rows: list[dict]) -> dict:
    """The (tau, reference, functional) that fits the held-in rows best: most models within
    WITHIN_DB, then the smallest mean absolute error; the held-out score at the same setting."""
    held_in = [r for r in rows if r.get("calibration", "held-in") == "held-in"]
    held_out = [r for r in rows if r.get("calibration") == "held-out"]
    grid = [score(held_in, t, ref, f) for f in FUNCTIONALS for ref in ("lambda_max", "gradient") for t in TAUS]
    best = max(grid, key=lambda s: (s["within"] or 0.0, -(s["mean_abs_db"] or math.inf)))
    out = {"chosen": best, "held_out": score(held_out, best["tau"], best["reference"], best["functional"]),
           "grid": [{k: v for k, v in g.items() if k != "errors"} for g in grid]}
    current = (config.LOCAL_TAU, config.LOCAL_REFERENCE, config.LOCAL_FUNCTIONAL)
    out["current"] = {"held_in": score(held_in, *current), "held_out": score(held_out, *current)}
    return out


def scan_agreement(rows: list[dict]) -> dict:
    """What ``scan`` itself predicts (rows carry ``scan``: its scores, and ``prior_psnr``: the
    no-gradient baseline the attacks reached) against the best achieved: the share within
    WITHIN_DB, Spearman on clipped PSNRs, and the models called RESISTANT although an attack
    beat the prior baseline by 3 dB or more."""
    pred = _clip([r["scan"]["predicted_psnr"] for r in rows])
    best = _clip([r["achieved_psnr"] for r in rows])
    err = pred - best
    wrong = [r["model"] for r in rows if r["scan"]["verdict"] == "RESISTANT"
             and r["achieved_psnr"] >= (r.get("prior_psnr") or math.inf) + 3.0]
    return {"models": len(rows), "within": float(np.mean(np.abs(err) <= WITHIN_DB)) if len(rows) else None,
            "mean_abs_db": float(np.mean(np.abs(err))) if len(rows) else None,
            "spearman": spearman(list(pred), list(best)), "resistant_but_reconstructed": wrong}
