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
from archscan.analysis.spectrum import GramOperator, Spectrum, lanczos, probe_vectors, worst_of
from archscan.analysis.symmetry import symmetry
from archscan.analysis.verdict import ChainView, OptimisationView, Quality
from archscan.defences import adds_noise, noise_variance, unmodelled
from archscan.terms import Verdict, ViewStatus

__all__ = ["optimisation_view", "spectrum_at_prior"]


def optimisation_view(module, options, shape, chain: ChainView, activations: int = 0, macs: int = 0,
                      global_pool: str | None = None) -> OptimisationView:
    """Run the optimisation-attack view as ``options.local`` asks; a view that cannot run says why.

    ``activations``: entries of every traced tensor of one forward pass (the memory estimate);
    ``macs``: multiply-accumulates of one forward pass (how much work the view plans: a
    deterministic plan, so the same seed gives the same report whatever the machine's speed);
    ``global_pool``: the layer that averages over every position before the head, if any
    (:func:`global_pool_of`): named in the view's notes, where the estimate is known to run high.
    """
    if options.local == "off":
        return OptimisationView(ViewStatus.OFF, "switched off with --local off")
    if options.local == "auto" and chain.quality.verdict == Verdict.LEAKS and options.chain_exact:
        return OptimisationView(ViewStatus.NOT_NEEDED, "the layer chain already determines the image")
    if module is None:
        return OptimisationView(ViewStatus.FAILED, "a .pt2 program is not differentiated by this version")
    try:
        with threads(torch.device(options.device).type):
            spec, plan = spectrum_at_prior(module, options, shape, activations, macs)
    except memory.OverBudget as e:
        return OptimisationView(ViewStatus.SKIPPED, str(e))
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return OptimisationView(ViewStatus.FAILED, f"the gradient map cannot be differentiated twice: "
                                f"{type(e).__name__}: {first}")
    if min((len(r.steps) for r in (spec.samples, spec.start)), default=0) == 0 or spec.samples.steps.max() < 2:
        return OptimisationView(ViewStatus.SKIPPED, f"the {plan['time_cap_s']:.0f} s time cap stopped it before two "
                                "Lanczos steps (give --local-budget more seconds, or --device cuda)", details=plan)
    exact = options.noisy and chain.quality.verdict == Verdict.LEAKS
    return view_of(spec, {**plan, "global_pool": global_pool}, options.defences, exact_attacker=exact)


def global_pool_of(g) -> str | None:
    """The first pooling op that averages a tensor with more than one position down to one per
    channel (global average pooling before a classifier, a token mean): its name, or None.

    There the image's spatial layout reaches the head only through sums over positions gated by
    the activation pattern, which a linearisation credits and gradient descent from a constant
    start does not find (docs/theory.md, "Where the linear model is optimistic")."""
    for n in g.nodes:
        layer = g.nodes[n]["layer"]
        if layer.kind != "pool" or not layer.in_shapes or not layer.in_shapes[0] or not layer.out_shape:
            continue
        positions_in = int(np.prod(layer.in_shapes[0][2:])) if len(layer.in_shapes[0]) > 2 else 1
        positions_out = int(np.prod(layer.out_shape[2:])) if len(layer.out_shape) > 2 else 1
        if positions_in > 1 and positions_out == 1:
            return layer.module_path or layer.name
    return None


@contextmanager
def threads(device_type: str):
    """The idle cores for the products on CPU unless OMP_NUM_THREADS says otherwise: the many small
    products of the view lose more to oversubscription on a shared machine than threads give, and
    gain from every core nobody else uses.  Only the time depends on it (the figures are the same
    at one and two threads on a CIFAR ResNet-18: 77 s and 60 s)."""
    before = torch.get_num_threads()
    if device_type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(idle_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def idle_cores() -> int:
    """Cores less the one-minute load average (rounded), at least one; half the cores where the
    load cannot be read."""
    cores = os.cpu_count() or 2
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return max(1, cores // 2)
    return max(1, min(cores, int(cores - load + 0.5)))


def _labels(module, images: np.ndarray) -> list[int]:
    with torch.no_grad():
        classes = module.eval()(torch.as_tensor(images[:1], dtype=torch.float32)).shape[-1]
    return [i % max(1, classes) for i in range(len(images))]


def plan_work(macs: int, k_max: int) -> tuple[int, int]:
    """(samples, Lanczos steps) for a model of ``macs`` multiply-accumulates per forward pass.

    The products allowed shrink like 1/sqrt(macs) (LOCAL_PRODUCTS at LOCAL_REFERENCE_MACS, a
    CIFAR ResNet-18), between LOCAL_MIN_PRODUCTS and what LOCAL_SAMPLES x LOCAL_STEPS need.  Steps
    come first (an unconverged quadrature is what widens the interval; the spread across samples
    is small): LOCAL_MIN_SAMPLES samples get as many steps as fit, more samples only after that.
    Two views per sample plus the probes.
    """
    probes = config.LOCAL_PROBES
    full = (2 * k_max + probes) * config.LOCAL_STEPS
    scale = (config.LOCAL_REFERENCE_MACS / max(macs, 1)) ** 0.5
    products = int(min(full, max(config.LOCAL_MIN_PRODUCTS, config.LOCAL_PRODUCTS * scale)))
    k_min = min(k_max, config.LOCAL_MIN_SAMPLES)
    steps = int(min(config.LOCAL_STEPS, max(2, products // (2 * k_min + probes))))
    k = int(min(k_max, max(k_min, (products // steps - probes) // 2)))
    return k, steps


def spectrum_at_prior(module, options, shape, activations: int = 0, macs: int = 0) -> tuple[Spectrum, dict]:
    """Lanczos from centred prior samples x_i - mu, at x_i (the target) and at mu (where attacks
    start: mid-grey or the prior mean), then from random probes: a fixed amount of work, with a
    wall-clock cap (--local-budget, else LOCAL_BUDGET_MAX_S) that only a slow machine reaches."""
    start = time.perf_counter()
    device = torch.device(getattr(options, "device", "cpu") or "cpu")
    B = max(1, int(getattr(options, "batch_size", 1) or 1))
    fedavg = getattr(options, "fedavg", None)
    E = fedavg.steps if fedavg is not None else 1   # the unrolled update: E forward/backward passes per product
    prior = prior_images(tuple(shape), config.PRIOR_IMAGES, options.seed)
    mu = prior.mean(axis=0)               # the attacks' start: the prior's mean
    k_fit = memory.points_that_fit(module, prior.shape[1] * B, activations * B * E, config.LOCAL_SAMPLES,
                                   config.LOCAL_STEPS, device, views=2)
    k, steps = plan_work(macs * B * E, k_fit)
    # k points of B images each: drawn only as many as used (a large batch at 224² is large)
    X = prior[: k] if B == 1 else prior_images(tuple(shape), max(config.PRIOR_IMAGES, k * B), options.seed)[: k * B]
    images = X.reshape(k * B, *shape)
    V, labels = (X - mu).reshape(k, -1), _labels(module, images)
    target = GramOperator(module, images, labels, dtype=torch.float32, device=device, batch=B, fedavg=fedavg)
    at_mu = GramOperator(module, np.repeat(mu[None], k * B, 0).reshape(k * B, *shape), labels, dtype=torch.float32,
                         device=device, batch=B, fedavg=fedavg)
    cap = float(options.local_budget) if options.local_budget is not None else config.LOCAL_BUDGET_MAX_S
    sym = symmetry(module, images, labels, mu, B, device, fedavg)
    runs = []
    for i, op in enumerate((target, at_mu)):
        left = cap * (i + 1) / 2.5 - (time.perf_counter() - start)
        runs.append(lanczos(op, V, steps, max(left, 0.0), batch=1, seed=options.seed, min_steps=2))
    left = cap - (time.perf_counter() - start)
    probe = lanczos(target, probe_vectors(config.LOCAL_PROBES, target.n, options.seed), steps, left,
                    batch=1, seed=options.seed, min_steps=2) if left > 0 else None
    energy = float(f"{((prior - mu) ** 2).sum(axis=1).mean():.6g}")
    plan = {"points": k, "planned_steps": steps, "prior_energy": energy, "device": str(device), "dtype": "float32",
            "time_cap_s": cap, "batch_size": B, "local_steps": E, "symmetry": sym.to_dict()}
    return Spectrum(runs[0], probe, runs[1]), plan


def view_of(spec: Spectrum, plan: dict, defences: tuple = (), exact_attacker: bool = False) -> OptimisationView:
    """The view's figures at the calibrated tau, reference and functional: per sample the larger
    error of the target's and the start's spectrum; a defence's Gaussian noise raises every
    sample's threshold by its noise floor (spectrum/estimate.py).

    ``exact_attacker``: the chain determines the image, so a closed-form attack solves it with no
    resolution limit of its own: only the noise limits it (tau = 0, at the target's spectrum:
    the Wiener error t_n / (lambda + t_n) per direction)."""
    B = plan.get("batch_size", 1)
    # the gradient of a batch is the sum of B per-image gradients, of norm ~ ||sum|| / sqrt(B) each
    noise = (lambda g2: noise_variance(defences, g2 / B)) if adds_noise(defences) else None
    tau = 0.0 if exact_attacker else config.LOCAL_TAU
    est = spec.at(tau, config.LOCAL_REFERENCE, noise_sq=noise)
    worst = (spec.worst(tau, config.LOCAL_REFERENCE, config.LOCAL_FUNCTIONAL, noise_sq=noise) if not exact_attacker
             else worst_of([est], [spec.samples.sq_norms], config.LOCAL_FUNCTIONAL))
    frac, n = worst.overall, spec.samples.n
    ms = plan["prior_energy"] * B   # a point's prior energy (B images): both views' PSNRs follow their scores
    unaligned = (psnr_of(float(frac.estimate * ms / n)), *(psnr_of(float(e * ms / n)) for e in (frac.hi, frac.lo)))
    misaligned = (plan.get("symmetry") or {}).get("ambiguous", False) and not exact_attacker
    # an attack that cannot tell the image from its mirror / shift keeps the prior mean's alignment
    aligned = tuple(min(p, psnr_of(float(ms / n))) for p in unaligned) if misaligned else unaligned
    mse = float((1.0 if misaligned else frac.estimate) * ms / n)
    quality = Quality(round(1.0 - frac.estimate, 6), mse, round(aligned[0], 3),
                      _method(exact_attacker, misaligned),
                      len(worst.sample_index))
    psnr_lo, psnr_hi = aligned[1], aligned[2]
    d = est.directions
    directions = None if d is None else {"estimate": int(round(d.estimate)), "lo": int(round(d.lo)),
                                         "hi": int(round(d.hi)), "of": n}
    return OptimisationView(ViewStatus.RAN, quality=quality,
                            leakage_interval=(round(1 - frac.hi, 6), round(1 - frac.lo, 6)),
                            psnr_interval=(round(psnr_lo, 3), round(psnr_hi, 3)), directions=directions,
                            details=_merged(_details(est, spec, worst, plan), _noise_details(spec, noise, defences),
                                            _alignment(unaligned, misaligned, plan)))


def _merged(*parts: dict) -> dict:
    """Detail dicts in order; their ``notes`` lists are joined."""
    out: dict = {}
    for part in parts:
        notes = out.get("notes", []) + part.get("notes", [])
        out.update(part)
        if notes:
            out["notes"] = notes
    return out


def _method(exact_attacker: bool, misaligned: bool = False) -> str:
    if exact_attacker:
        return ("spectrum of d(gradients)/d(image) at the image: the closed-form chain solves it exactly, so only "
                "the defence's noise limits the attack (Wiener error per direction)")
    out = (f"spectrum of d(gradients)/d(image) at the image and at the prior mean: "
           f"{config.LOCAL_FUNCTIONAL} weak energy at tau = {config.LOCAL_TAU} x {config.LOCAL_REFERENCE}")
    return out + ("; PSNR at the prior mean's: the gradients barely tell the image from its mirror image or "
                  "shift (analysis/symmetry.py)" if misaligned else "")


def _alignment(unaligned: tuple, misaligned: bool, plan: dict) -> dict:
    """The linearisation's PSNR before the symmetry cap, and a note, when the cap applied."""
    if not misaligned:
        return {}
    sym = plan["symmetry"]
    note = (f"the gradients of the image's mirror image or 1/8 shift are within {sym['ambiguity']:.2f} of its own "
            f"(relative to the attack's start; at most {sym['delta']} is indistinguishable): an attack cannot align "
            f"the image, so the predicted PSNR is the prior mean's ({unaligned[0]:.1f} dB before); the leakage "
            f"score and the verdict stay the linearisation's")
    return {"psnr_unaligned": round(unaligned[0], 3),
            "psnr_unaligned_interval": [round(unaligned[1], 3), round(unaligned[2], 3)], "notes": [note]}


def _noise_details(spec: Spectrum, noise, defences: tuple) -> dict:
    """The defences the figure accounts for, and the noise std per gradient coordinate."""
    if not defences:
        return {}
    out = {"defences_modelled": [str(d) for d in defences if d.adds_noise],
           "defences_not_modelled": [str(d) for d in unmodelled(defences)]}
    if noise is not None:
        stds = [noise(float(g)) ** 0.5 for g in spec.samples.grad_sq_norms]
        out["noise_std"] = [float(f"{min(stds):.4g}"), float(f"{max(stds):.4g}")]
    return out


def _details(est, spec: Spectrum, worst, plan: dict) -> dict:
    """How the figure was obtained and how far to trust it."""
    runs = [r for r in (spec.samples, spec.start) if r is not None]
    steps = np.concatenate([r.steps for r in runs]) if runs else np.zeros(1, int)
    cut = [n for r in runs for n in r.notes if n.startswith("budget")]
    return {"method": "Lanczos quadrature of A = JᵀJ from each prior sample, at its image and at the prior mean",
            "tau": est.tau, "reference": config.LOCAL_REFERENCE, "functional": config.LOCAL_FUNCTIONAL,
            "samples": int(len(worst.sample_index)), "steps": [int(steps.min()), int(steps.max())],
            "products": int(sum(r.products for r in runs) + (spec.probes.products if spec.probes else 0)),
            "lambda_max": float(f"{est.lambda_max:.6g}"), "lambda_max_residual": float(f"{est.lambda_max_residual:.3g}"),
            "spread": round(float(worst.fractions.estimate.std()), 4), **plan,
            "cut_by_time_cap": bool(cut), "notes": (["the time cap cut the planned work short: this figure depends on "
                                                      "the machine's speed"] if cut else [])}
