"""Least-squares solvers for :class:`~archscan.attacks.layer_system.LayerSystem`, in torch.

Both solve K independent problems at once (stacked on a leading dimension, vectors in the row
space ``(K, rows)``): :func:`lsqr` is matrix-free and runs on any device, with every problem
stopping on its own; :func:`dense_solve` builds the explicit matrices (small layers and
cross-checks only) and solves them in one batched call.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def lsqr(apply, apply_t, b: torch.Tensor, x0: torch.Tensor, max_iter: int = 5000,
         atol: float = 1e-14, btol: float = 1e-14, check_every: int = 8):
    """LSQR (Paige & Saunders 1982) for K problems ``min |U_k x_k - b_k|`` at once, matrix-free.

    Parameters
    ----------
    apply, apply_t : callable
        ``U x`` (``(K, rows)``) and ``U^T r`` (shaped like ``x0``), every problem at once.
    b : torch.Tensor
        Right-hand sides ``(K, rows)``.
    x0 : torch.Tensor
        Starting points ``(K, ...)``; from zero LSQR converges to the minimum-norm solution.
    max_iter : int
        Iteration cap.
    atol, btol : float
        Stopping tolerances of the original algorithm (consistent and least-squares tests).
    check_every : int
        Iterations between checks whether every problem has stopped (the only host syncs).

    Every problem runs the scalar recurrences of its own LSQR (``(K, 1)`` tensors) and stops on
    its own tests: from then on its iterate is frozen, so its result depends neither on the other
    problems nor on ``check_every``.  The vectors are updated in place (fewer large temporaries:
    fresh allocations of a few MB each iteration cost page faults on CPU), so ``apply`` and
    ``apply_t`` must return new tensors.  Runs without autograd.

    Returns
    -------
    tuple
        ``(x, iterations)``, ``iterations`` a ``(K,)`` long tensor.
    """
    shape, K = x0.shape, x0.shape[0]

    def op(v):
        return apply(v.view(shape))

    def op_t(u):
        return apply_t(u).reshape(K, -1)

    x = x0.reshape(K, -1).clone()
    u, beta = _unit(b - op(x))
    v, alpha = _unit(op_t(u))
    w, done = v.clone(), (beta == 0) | (alpha == 0)
    iterations = torch.zeros_like(done, dtype=torch.long)
    phibar, rhobar, anorm, bnorm = beta, alpha, torch.zeros_like(beta), beta
    for it in range(max_iter):
        if it % check_every == 0 and bool(done.all()):
            break
        u, beta = _unit(op(v).addcmul_(alpha, u, value=-1))
        v, alpha = _unit(op_t(u).addcmul_(beta, v, value=-1))
        anorm = torch.hypot(torch.hypot(anorm, alpha), beta)  # Frobenius norm of the bidiagonal
        rho = torch.hypot(rhobar, beta).clamp_min(_TINY)
        c, s = rhobar / rho, beta / rho
        theta, rhobar, phi, phibar = s * alpha, -c * alpha, c * phibar, s * phibar
        x.addcmul_(torch.where(done, 0, phi / rho), w)  # a stopped problem is frozen: x += 0 * w
        w = w.mul_(torch.where(done, 0, theta / rho)).neg_().add_(v)  # (and its w stays finite)
        iterations += ~done
        arnorm = alpha * c.abs() * phibar  # |U^T r|, for the least-squares test
        done = done | _lsqr_stop(phibar, arnorm, atol * anorm, btol * bnorm, _norm(x), alpha, beta)
    return x.view(shape), iterations.view(K)


_TINY = 1e-300


def _norm(t: torch.Tensor) -> torch.Tensor:
    """Row norms of a ``(K, n)`` tensor as ``(K, 1)``."""
    return torch.linalg.vector_norm(t, dim=1, keepdim=True)


def _unit(t: torch.Tensor):
    """Rows of ``t`` scaled in place to unit norm (zero rows stay zero), and the norms."""
    norm = _norm(t)
    return t.div_(norm.clamp_min(_TINY)), norm


def _lsqr_stop(rnorm, arnorm, a_anorm, b_bnorm, xnorm, alpha, beta) -> torch.Tensor:
    """LSQR stopping tests per problem (``a_anorm = atol |U|``, ``b_bnorm = btol |b|``): consistent
    system solved, least-squares optimum reached, or breakdown (Krylov space exhausted: the
    current iterate is exact)."""
    breakdown = torch.minimum(alpha, beta) == 0
    consistent = rnorm <= torch.addcmul(b_bnorm, a_anorm, xnorm)
    return breakdown | consistent | (arnorm <= a_anorm * rnorm)


def operator_columns(system) -> torch.Tensor:
    """Explicit ``U_k`` (``(K, rows, unknowns)``) from the operator applied to unit vectors.

    Columns in chunks with ``torch.func.vmap`` (a loop where an operator does not vectorise):
    the generic construction, for systems without a ``matrix`` method and for cross-checks.
    """
    K, shape = system.x_shape[0], tuple(system.x_shape[1:])
    n = math.prod(shape)
    eye = torch.eye(n, dtype=system.g.dtype, device=system.g.device)

    def column(e):
        return system.apply(e.view(1, *shape).expand(K, *shape))

    try:
        cols = torch.func.vmap(column, chunk_size=max(16, 256 // K))(eye)
    except Exception:  # noqa: BLE001 - an operator without a batching rule: one column at a time
        cols = torch.stack([column(eye[i]) for i in range(n)])
    return cols.permute(1, 2, 0).contiguous()


def dense_matrix(system) -> torch.Tensor:
    """Explicit ``U_k`` of every problem, ``(K, rows, unknowns)``: small layers / cross-checks only.

    The system's own ``matrix()`` where it has one, else :func:`operator_columns`; cached on the
    system (the hybrid attack solves twice).
    """
    cached = getattr(system, "_dense_cache", None)
    if cached is None:
        build = getattr(system, "matrix", None)
        cached = build() if build is not None else operator_columns(system)
        system._dense_cache = cached
    return cached


@torch.no_grad()
def dense_solve(system, x0: torch.Tensor) -> torch.Tensor:
    """Least-squares solution closest to ``x0`` of every problem, with explicit matrices (SVD)."""
    U, V = dense_matrix(system), (system.rhs_flat() - system.apply(x0)).unsqueeze(2)
    if U.device.type == "cpu":
        sol = torch.linalg.lstsq(U, V, driver="gelsd").solution
    else:  # CUDA's lstsq has no rank-revealing driver; the pseudo-inverse is
        sol = torch.linalg.pinv(U) @ V
    return x0 + sol.view(system.x_shape)


def dense_fits(system, settings: dict) -> bool:
    """True when ``settings`` allow an explicit matrix for one problem of ``system``."""
    n = math.prod(system.x_shape[1:])
    rows = system.rhs_flat().shape[1]
    return n <= settings.get("dense_max", 0) and n * rows <= settings.get("dense_entries", 3e7)


def _dense_chunked(system, settings: dict, x0: torch.Tensor) -> torch.Tensor:
    """:func:`dense_solve` over chunks of problems, at most ``dense_entries`` matrix entries each
    (one problem at least), so K problems need no more memory than one did."""
    K, n = system.x_shape[0], math.prod(system.x_shape[1:])
    per = max(1, int(settings.get("dense_entries", 3e7) // (n * system.rhs_flat().shape[1])))
    if K <= per or not hasattr(system, "take"):
        return dense_solve(system, x0)
    return torch.cat([dense_solve(system.take(slice(i, i + per)), x0[i:i + per])
                      for i in range(0, K, per)])


def solve_system(system, settings: dict, x0: torch.Tensor):
    """Least-squares inputs of the K problems of one system: ``(x, iterations (K,))``.

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
            iterations = iterations + it
        return torch.cat(xs, dim=1), iterations
    if solver == "dense" or (solver == "auto" and dense_fits(system, settings)):
        zero = torch.zeros(system.x_shape[0], dtype=torch.long, device=x0.device)
        return _dense_chunked(system, settings, x0), zero
    return lsqr(system.apply, system.apply_t, system.rhs_flat(), x0, settings["max_iter"],
                settings["tol"], settings["tol"])
