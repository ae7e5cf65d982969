"""Local identifiability: the rank of the Jacobian J = d(shared gradients)/d(image).

The layer-by-layer chain (R-GAP's view) stops where an upper layer is only partly determined. An
optimisation attack (DLG, Inverting Gradients) works on the whole nonlinear system at once: if J has
full column rank at the true image, no image direction leaves every gradient unchanged to first
order, so the image is locally unique and gradient matching can find it; its null space is the part
no attack can see.  We compute rank(S J) for a random projection S with n + 64 rows (equal to
rank J with probability 1), as n + 64 vector-Jacobian products of the gradient map, in float64,
at the model's weights and a natural image.  This is a *numerical* rank: the report gives the
singular-value gap that separates it, and the step is skipped when it would exceed a time budget.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad, vjp, vmap

from archscan import config
from archscan.analysis.prior import prior_images
from archscan.analysis.scores import prior_sample, quality_of
from archscan.analysis.verdict import ChainView, OptimisationView
from archscan.terms import Verdict, ViewStatus

BATCH = 128
GAP = 1e-8        # singular values below GAP * sigma_max count as zero (the numerical rank)


@dataclass(frozen=True)
class LocalResult:
    rank: int
    unknowns: int
    null_basis: np.ndarray | None   # (n, d) orthonormal, None when skipped
    weak_basis: np.ndarray | None   # (n, d') directions with sigma < tau * sigma_max (d' >= d)
    gap: float                      # sigma_{r+1} / sigma_r (0 when full rank), the separation
    sigma_min_ratio: float          # sigma_r / sigma_max: conditioning of the identifiable part
    seconds: float
    skipped: str | None = None


def _gradient_map(model, x0: torch.Tensor, label: int):
    params = {k: v.detach() for k, v in model.named_parameters()}
    y = torch.tensor([label])

    def flat(x):
        loss = lambda p: torch.nn.functional.cross_entropy(functional_call(model, p, (x,)), y)  # noqa: E731
        return torch.cat([v.reshape(-1) for v in grad(loss)(params).values()])
    return flat


def _projected_jacobian(f_vjp, n_out: int, k: int, seed: int, budget: float, start: float):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(0, k, BATCH):
        t0 = time.perf_counter()
        S = torch.randn(min(BATCH, k - i), n_out, dtype=torch.float64, generator=gen)
        rows.append(vmap(lambda s: f_vjp(s)[0].reshape(-1))(S))
        estimate = (t0 - start) + (time.perf_counter() - t0) * k / BATCH
        if i == 0 and estimate > budget:
            return None, f"estimated {estimate:.0f} s exceeds the {budget:.0f} s budget"
    return torch.cat(rows).numpy(), None


def local_identifiability(model: torch.nn.Module, image: np.ndarray, budget: float = 60.0,
                          seed: int = 0, label: int = 0, train: bool = False, tau: float = 1e-3) -> LocalResult:
    """Numerical rank and null space of d(gradients)/d(image) at ``image`` (C, H, W).

    ``tau``: directions whose singular value is below tau * sigma_max are *weak*: visible in
    exact arithmetic, but below what a gradient-matching attack resolves in practice.
    """
    start = time.perf_counter()
    net = copy.deepcopy(model).double().train(train)
    x0 = torch.as_tensor(image, dtype=torch.float64)[None]
    n = x0.numel()
    out, f_vjp = vjp(_gradient_map(net, x0, label), x0)
    k = min(n, out.numel()) + 64  # rank J <= min(params, n): more projections add nothing
    SJ, why = _projected_jacobian(f_vjp, out.numel(), k, seed, budget, start)
    if SJ is None:
        return LocalResult(0, n, None, None, 0.0, 0.0, time.perf_counter() - start, why)
    return _from_svd(SJ, n, tau, time.perf_counter() - start)


def _from_svd(SJ: np.ndarray, n: int, tau: float, seconds: float) -> LocalResult:
    _, s, vt = np.linalg.svd(SJ, full_matrices=True)
    s = np.concatenate([s, np.zeros(max(0, n - s.size))])
    if s[0] == 0:
        return LocalResult(0, n, vt.T.copy(), vt.T.copy(), 0.0, 0.0, seconds)
    rank = int((s > GAP * s[0]).sum())
    strong = int((s > tau * s[0]).sum())
    gap = float(s[rank] / s[rank - 1]) if 0 < rank < n else 0.0
    return LocalResult(rank, n, vt[rank:].T.copy(), vt[strong:].T.copy(), gap,
                       float(s[rank - 1] / s[0]) if rank else 0.0, seconds)


def optimisation_view(module, options, shape, chain: ChainView) -> OptimisationView:
    """Run the optimisation-attack view as ``options.local`` asks; a view that cannot run says why."""
    if options.local == "off":
        return OptimisationView(ViewStatus.OFF, "--local off: the optimisation-attack view was switched off")
    if options.local == "auto" and chain.quality.verdict == Verdict.LEAKS:
        return OptimisationView(ViewStatus.NOT_NEEDED, "the layer chain already determines the image")
    if module is None:
        return OptimisationView(ViewStatus.FAILED, "a .pt2 program is not differentiated by this version")
    image = prior_images(tuple(shape), 1, options.seed)[0].reshape(shape)
    budget = options.local_budget if options.local_budget is not None else config.LOCAL_BUDGET_MAX_S
    try:
        res = local_identifiability(module, image, budget, options.seed, train=options.bn_mode == "train",
                                    tau=config.LOCAL_TAU)
    except (RuntimeError, NotImplementedError, TypeError) as e:
        return OptimisationView(ViewStatus.FAILED, f"the gradient map cannot be differentiated: {type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}")
    details = {"method": "numerical rank of S J, J = d grads / d image", "tau": config.LOCAL_TAU,
               "seconds": round(res.seconds, 2)}
    if res.skipped:
        return OptimisationView(ViewStatus.SKIPPED, res.skipped, details=details)
    X = prior_sample(shape, options.seed)
    lost = ((X @ res.weak_basis) ** 2).sum(axis=1)
    quality = quality_of(lost, X, f"local identifiability: {res.weak_basis.shape[1]} directions below "
                                  "tau * sigma_max of d(gradients)/d(image)")
    n = res.unknowns
    directions = {"estimate": n - res.weak_basis.shape[1], "lo": n - res.weak_basis.shape[1],
                  "hi": n - res.weak_basis.shape[1], "of": n}
    details.update({"rank": res.rank, "gap": res.gap, "sigma_min_ratio": res.sigma_min_ratio})
    return OptimisationView(ViewStatus.RAN, quality=quality, directions=directions, details=details)
