"""Lanczos on A = JᵀJ: k processes in lockstep (one per start vector), full reorthogonalisation,
within a wall-clock budget.  The run keeps only recurrence coefficients, so quadrature for any
threshold comes from it afterwards (``quadrature.py``).  All Krylov arithmetic is float64."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from archscan.analysis.spectrum.operator import GramOperator, as_tensor

NOISE_FACTOR = 10.0   # rounding floor of one A-product, in units of eps(dtype) * lambda_max
BREAKDOWN = 10.0      # beta below BREAKDOWN * eps(dtype) * ||T|| means an invariant subspace
MIN_STEPS = 10        # fewer Lanczos steps than this is not worth having: drop samples instead
MAX_BATCH = 16        # vectors per vmapped product (memory grows linearly with it)
BATCH_GAIN = 0.8      # use vmap only if it costs < 80 % of the per-vector time of single products


class _Clock:
    """Wall clock with a deadline and a running estimate of the cost of one vector product."""

    def __init__(self, start: float, budget_s: float | None):
        self.start = start
        self.deadline = math.inf if budget_s is None else start + budget_s
        self.per_vector = None           # seconds per vector product (None until measured)
        self.overhead = 0.0              # seconds of Krylov arithmetic per step (reorthogonalising)
        self.calls = 0
        self.refused = False             # a product was skipped for lack of time

    def allows(self, b: int) -> bool:
        """Whether a product of b vectors is predicted to finish before the deadline."""
        if self.per_vector is None:
            return True                  # the first product must run: it is the cost estimate
        return time.perf_counter() + b * self.per_vector + self.overhead <= self.deadline

    def record(self, b: int, seconds: float) -> None:
        self.per_vector, self.calls = seconds / b, self.calls + 1

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()


class _State:
    """Lanczos bases and recurrence coefficients of k processes (one row per start vector)."""

    def __init__(self, Q0: torch.Tensor, steps: int, points: np.ndarray):
        k, n = Q0.shape
        self.points = points                     # linearisation point of each row
        self.Q = torch.zeros(k, steps + 1, n, dtype=torch.float64, device=Q0.device)
        self.Q[:, 0] = Q0
        self.alpha = np.zeros((k, steps))
        self.beta = np.zeros((k, steps))
        self.steps = np.zeros(k, dtype=int)      # completed steps per row
        self.active = np.ones(k, dtype=bool)
        self.max_steps = steps


def _orthogonalise(W: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """W minus its projection on the orthonormal rows of basis (per row), done twice.

    Full reorthogonalisation: plain Lanczos loses orthogonality as soon as a Ritz value
    converges, which produces spurious copies of converged eigenvalues and wrong Gauss weights.
    Classical Gram-Schmidt applied twice ("twice is enough") keeps Q orthonormal to ~eps.
    """
    for _ in range(2):
        W = W - torch.einsum("rjn,rj->rn", basis, torch.einsum("rjn,rn->rj", basis, W))
    return W


def _advance(st: _State, j: int, rows: np.ndarray, W: torch.Tensor, tol: float) -> None:
    """One Lanczos step for ``rows`` given W = A q_j; deactivates rows that break down."""
    rows = np.asarray(rows, dtype=int)
    q = st.Q[rows, j]
    a = (q * W).sum(-1)
    W = W - a[:, None] * q
    if j > 0:
        W = W - torch.as_tensor(st.beta[rows, j - 1], device=W.device)[:, None] * st.Q[rows, j - 1]
    W = _orthogonalise(W, st.Q[rows, : j + 1])
    b = W.norm(dim=-1)
    st.alpha[rows, j], st.beta[rows, j] = a.cpu().numpy(), b.cpu().numpy()
    st.steps[rows] = j + 1
    scale = max(np.abs(st.alpha[:, : j + 1]).max(), 1e-300)
    broken = b.cpu().numpy() <= tol * scale      # invariant subspace: the quadrature is exact
    st.beta[rows[broken], j] = 0.0
    st.active[rows[broken]] = False
    ok = ~broken
    if j + 1 < st.max_steps and ok.any():
        st.Q[rows[ok], j + 1] = W[ok] / b[ok][:, None]
    st.active[st.steps >= st.max_steps] = False


def _products(op, st, j, rows, clock, chunk, batched):
    """A q_j for ``rows`` in chunks; a chunk predicted to overrun the deadline is not started."""
    done, outs = [], []
    if len(rows):                                       # even chunks: 8 + 8 rather than 14 + 2
        chunk = -(-len(rows) // -(-len(rows) // chunk))
    for i in range(0, len(rows), chunk):
        r = rows[i : i + chunk]
        if not clock.allows(len(r)):
            clock.refused = True
            break
        t0 = time.perf_counter()
        outs.append(op(st.Q[r, j], point_rows=st.points[r], batched=batched and len(r) > 1))
        clock.record(len(r), time.perf_counter() - t0)
        done.extend(r)
    return np.asarray(done, dtype=int), (torch.cat(outs) if outs else None)


def _step(op, st, j, clock, chunk, batched, tol) -> bool:
    """Lanczos step j for every active row; False when nothing could be done."""
    rows = np.flatnonzero(st.active & (st.steps == j))
    if len(rows) == 0:
        return False
    done, W = _products(op, st, j, rows, clock, chunk, batched)
    st.active[np.setdiff1d(rows, done)] = False        # out of time: these stop at j steps
    if len(done):
        t0 = time.perf_counter()
        _advance(st, j, done, W, tol)
        clock.overhead = time.perf_counter() - t0
    return len(done) == len(rows) and bool(st.active.any())


def _plan_rows(clock: _Clock, k: int, steps: int, min_steps: int) -> int:
    """How many of the k processes fit the remaining budget for at least min(steps, min_steps)."""
    if clock.per_vector is None or math.isinf(clock.deadline):
        return k
    need = min(steps, min_steps) - 1                    # step 0 of a kept row is paid now or soon
    per_row = max(need, 1) * clock.per_vector
    return int(min(k, max(1, clock.remaining() // per_row)))


def _first_step(op, st, clock, batch, min_steps, tol, notes):
    """Step 0: time single products, choose k and the vmap batch size, then finish step 0.

    The first product pays one-off costs (dispatch caches, allocator), so it is a warm-up; the
    second single product is the clean per-vector cost; a vmapped chunk of the next rows
    measures whether batching pays (it does for small models, not for compute-bound ones).
    """
    k = st.Q.shape[0]
    singles = np.arange(min(2, k))
    done, W = _products(op, st, 0, singles, clock, 1, False)
    _advance(st, 0, done, W, tol)
    c1 = clock.per_vector
    keep = max(len(singles), _plan_rows(clock, k, st.max_steps, min_steps))
    st.active[keep:] = False
    rest = np.arange(len(singles), keep)
    chunk, batched = _choose_batch(op, st, clock, rest, c1, batch, tol, notes)
    _step(op, st, 0, clock, chunk, batched, tol)
    if keep < k:
        notes.append(f"budget: kept {keep} of {k} samples ({c1:.3g} s per product)")
    if not math.isinf(clock.deadline):
        m_fit = int(min(st.max_steps, clock.remaining() // (keep * clock.per_vector) + 1))
        notes.append(f"plan: {keep} samples x ~{m_fit} steps at {clock.per_vector:.3g} s/product")
    return chunk, batched


def _choose_batch(op, st, clock, rest, c1, batch, tol, notes):
    """Decide the vmap batch (measured on real step-0 products when ``batch`` is None)."""
    if batch is not None:
        return max(1, int(batch)), int(batch) > 1
    if len(rest) < 2:
        return 1, False
    trial = rest[: min(MAX_BATCH, len(rest))]
    try:
        done, W = _products(op, st, 0, trial, clock, len(trial), True)
    except (RuntimeError, NotImplementedError) as err:
        notes.append(f"vmap failed ({type(err).__name__}); products one vector at a time")
        return 1, False
    if len(done):
        _advance(st, 0, done, W, tol)
    cb = clock.per_vector
    batched = cb < BATCH_GAIN * c1
    notes.append(f"batching: single {c1:.3g} s/vector, vmap x{len(trial)} {cb:.3g} s/vector "
                 f"-> {'vmap' if batched else 'single'}")
    return (len(trial), True) if batched else (1, False)


@dataclass(frozen=True)
class LanczosRun:
    """Recurrence coefficients of k Lanczos processes; quadrature for any tau comes from these.

    Attributes
    ----------
    alpha, beta : ndarray (k, steps)
        Row i: T_m = tridiag(beta[i, :m-1], alpha[i, :m], beta[i, :m-1]); beta[i, m-1] is the
        norm of the residual after m steps (0 after a breakdown: the quadrature is then exact).
    steps : ndarray (k,)
        Completed steps per row (the Gauss rule of row i has steps[i] nodes).
    sq_norms : ndarray (k,)
        ||v_i||².
    points : ndarray (k,)
        Linearisation point of each row; ``grad_sq_norms[i]`` is ||g||² there.
    sample_index : ndarray (k,)
        Row i is samples[sample_index[i]] (the rows the budget kept, in seeded order).
    n, n_params : int
        Pixels and shared parameters.
    products, calls : int
        Vector products with A, and the (possibly vmapped) calls that made them.
    seconds, setup_seconds, seconds_per_product : float
        Wall time in all, building the gradient graph, last measured per-vector product cost.
    dtype, mode : str
        Product dtype and how J q was formed ("jvp" or "double-vjp").
    batch : int
        Vectors per product call.
    noise : float
        Relative rounding floor of a product (NOISE_FACTOR * eps(dtype)); eigenvalues closer than
        noise * lambda_max to the threshold count as ambiguous in the hard bracket.
    notes : tuple of str
    """

    alpha: np.ndarray
    beta: np.ndarray
    steps: np.ndarray
    sq_norms: np.ndarray
    points: np.ndarray
    grad_sq_norms: np.ndarray
    sample_index: np.ndarray
    n: int
    n_params: int
    products: int
    calls: int
    seconds: float
    setup_seconds: float
    seconds_per_product: float
    dtype: str
    mode: str
    batch: int
    noise: float
    notes: tuple


def lanczos(op: GramOperator, samples, steps: int = 80, budget_s: float | None = None,
            batch: int | None = None, seed: int = 0, min_steps: int = MIN_STEPS,
            start: float | None = None, setup_seconds: float = 0.0) -> LanczosRun:
    """Run k Lanczos processes on A in lockstep, one started at each sample.

    Parameters
    ----------
    op : GramOperator
        With one point, every sample is seen from it; with k points, sample i from point i.
    samples : array (k, n)
        Centred prior vectors v_i (zero rows are dropped).
    steps : int
        Maximum Lanczos steps m per sample (capped at n).
    budget_s : float or None
        Wall-clock budget counted from ``start``; no product predicted to overrun it is started.
        When fewer than ``min_steps`` steps would fit for all samples, samples are dropped
        (seeded order) until they do.
    batch : int or None
        Vectors per vmapped product; None measures whether vmap pays and decides.
    seed : int
        Seeds the order in which samples are processed (and therefore which survive a cut).
    """
    start = time.perf_counter() if start is None else start
    V = as_tensor(samples, torch.float64, op.device).reshape(len(samples), -1)
    sq = (V * V).sum(1).cpu().numpy()
    order = np.random.default_rng(seed).permutation(len(V))
    order = order[sq[order] > 0]
    steps = int(min(steps, op.n))
    points = np.arange(len(V)) if len(op.points) == len(V) else np.zeros(len(V), dtype=int)
    st = _State(V[order] / torch.as_tensor(np.sqrt(sq[order]), device=V.device)[:, None], steps, points[order])
    clock, notes, before = _Clock(start, budget_s), [], op.products
    tol = BREAKDOWN * torch.finfo(op.dtype).eps
    chunk, batched = _first_step(op, st, clock, batch, min_steps, tol, notes)
    for j in range(1, steps):
        if not _step(op, st, j, clock, chunk, batched, tol):
            break
    return _finish(op, st, order, sq, clock, chunk, notes, setup_seconds, op.products - before)


def _finish(op, st, order, sq, clock, chunk, notes, setup_seconds, products) -> LanczosRun:
    """Package the rows that did at least one step."""
    rows = st.steps > 0
    if clock.refused:
        notes.append(f"budget: stopped at {st.steps[rows].min()}-{st.steps[rows].max()} of "
                     f"{st.max_steps} steps")
    return LanczosRun(
        alpha=st.alpha[rows], beta=st.beta[rows], steps=st.steps[rows], sq_norms=sq[order][rows],
        points=st.points[rows], grad_sq_norms=np.array([op.points[i].grad_sq_norm for i in st.points[rows]]),
        sample_index=order[rows], n=op.n, n_params=op.n_params, products=products,
        calls=clock.calls, seconds=time.perf_counter() - clock.start, setup_seconds=setup_seconds,
        seconds_per_product=float(clock.per_vector or 0.0),
        dtype=str(op.dtype).replace("torch.", ""),
        mode=op.mode, batch=chunk, noise=NOISE_FACTOR * torch.finfo(op.dtype).eps,
        notes=tuple(op.notes + notes))
