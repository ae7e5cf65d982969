"""Least-squares solvers for :class:`~archscan.attacks.layer_system.LayerSystem`, in torch.

:func:`lsqr` is matrix-free and runs on any device; :func:`dense_solve` builds the explicit matrix
(small layers and cross-checks only).
"""
from __future__ import annotations

import math

import torch


def lsqr(apply, apply_t, b: torch.Tensor, x0: torch.Tensor, max_iter: int = 5000,
         atol: float = 1e-14, btol: float = 1e-14):
    """LSQR (Paige & Saunders 1982) for ``min |U x - b|``, matrix-free, on any torch device.

    Parameters
    ----------
    apply, apply_t : callable
        ``U x`` (flat result) and ``U^T r`` (shaped like ``x0``).
    b : torch.Tensor
        Flat right-hand side.
    x0 : torch.Tensor
        Starting point; from zero LSQR converges to the minimum-norm least-squares solution.
    max_iter : int
        Iteration cap.
    atol, btol : float
        Stopping tolerances of the original algorithm (consistent and least-squares tests).

    Returns
    -------
    tuple
        ``(x, iterations)``.
    """
    x = x0.clone()
    u = b - apply(x)
    beta = float(u.norm())
    if beta == 0:
        return x, 0
    u = u / beta
    v = apply_t(u)
    alpha = float(v.norm())
    if alpha == 0:
        return x, 0
    v, w = v / alpha, v / alpha
    phibar, rhobar, anorm, bnorm = beta, alpha, 0.0, beta
    for it in range(1, max_iter + 1):
        u = apply(v) - alpha * u
        beta = float(u.norm())
        u = u / beta if beta > 0 else u
        v = apply_t(u) - beta * v
        alpha = float(v.norm())
        v = v / alpha if alpha > 0 else v
        anorm = math.sqrt(anorm ** 2 + alpha ** 2 + beta ** 2)
        rho = math.hypot(rhobar, beta)
        c, s = rhobar / rho, beta / rho
        theta, rhobar, phi, phibar = s * alpha, -c * alpha, c * phibar, s * phibar
        x = x + (phi / rho) * w
        w = v - (theta / rho) * w
        arnorm = alpha * abs(c) * phibar  # |U^T r|, for the least-squares test
        if _lsqr_done(phibar, arnorm, anorm, bnorm, float(x.norm()), atol, btol, alpha, beta):
            return x, it
    return x, max_iter


def _lsqr_done(rnorm, arnorm, anorm, bnorm, xnorm, atol, btol, alpha, beta) -> bool:
    """LSQR stopping tests: consistent system solved, least-squares optimum reached, or breakdown."""
    if alpha == 0 or beta == 0:  # Krylov space exhausted: the current iterate is exact
        return True
    if rnorm <= btol * bnorm + atol * anorm * xnorm:
        return True
    return arnorm <= atol * anorm * rnorm


def dense_matrix(system) -> torch.Tensor:
    """Explicit ``U`` (rows x unknowns): only for small layers / cross-checks.

    Columns are ``U e_i``, computed in chunks with ``torch.func.vmap`` (a loop where an operator
    does not vectorise); the matrix is cached on the system (the hybrid attack solves twice).
    """
    cached = getattr(system, "_dense_cache", None)
    if cached is not None:
        return cached
    n = math.prod(system.x_shape)
    eye = torch.eye(n, dtype=system.g.dtype, device=system.g.device)
    shape = system.x_shape

    def column(e):
        return system.apply(e.view(shape))

    try:
        cols = torch.func.vmap(column, chunk_size=256)(eye)
    except Exception:  # noqa: BLE001 - an operator without a batching rule: one column at a time
        cols = torch.stack([column(eye[i]) for i in range(n)])
    system._dense_cache = cols.T.contiguous()
    return system._dense_cache


def dense_solve(system, x0: torch.Tensor) -> torch.Tensor:
    """Least-squares solution closest to ``x0``, with an explicit matrix (SVD-based)."""
    U, V = dense_matrix(system), system.rhs_flat() - system.apply(x0)
    if U.device.type == "cpu":
        sol = torch.linalg.lstsq(U, V.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    else:  # CUDA's lstsq has no rank-revealing driver; the pseudo-inverse is
        sol = torch.linalg.pinv(U) @ V
    return x0 + sol.view(system.x_shape)


def dense_fits(system, settings: dict) -> bool:
    """True when ``settings`` allow an explicit matrix for ``system`` (unknowns and entries)."""
    n = math.prod(system.x_shape)
    rows = system.rhs_flat().numel()
    return n <= settings.get("dense_max", 0) and n * rows <= settings.get("dense_entries", 3e7)


def solve_system(system, settings: dict, x0: torch.Tensor):
    """Least-squares input of one system: ``(x, iterations)``.

    ``solver``: ``"lsqr"`` (matrix-free), ``"dense"`` (explicit SVD least squares) or ``"auto"``:
    a grouped conv is split into its independent per-group blocks, and every block (or
    ungrouped system) with at most ``dense_max`` unknowns is solved densely, exactly whatever its
    conditioning (a single-channel dilated 3x3 conv can have a condition number of 1e8, out of
    LSQR's reach in any sensible number of iterations); larger ones use LSQR.
    """
    solver = settings.get("solver", "lsqr")
    parts = system.group_parts() if solver == "auto" and hasattr(system, "group_parts") else None
    if parts:
        xs, iterations = [], 0
        for sub, channels in parts:
            x, it = solve_system(sub, settings, x0[:, channels])
            xs.append(x)
            iterations += it
        return torch.cat(xs, dim=1), iterations
    if solver == "dense" or (solver == "auto" and dense_fits(system, settings)):
        return dense_solve(system, x0), 0
    return lsqr(system.apply, system.apply_t, system.rhs_flat(), x0, settings["max_iter"],
                settings["tol"], settings["tol"])
