"""The layer-by-layer recursion R-GAP's chain and DAG attacks share: the state at a point of the
model (value, gradient, which entries are known), the head's state, and one step down through an
element-wise op or a Conv2d/Linear layer (least squares on its stacked forward and gradient rows)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from archscan.validate.attacks.activations import act_inverse, act_slope
from archscan.validate.attacks.analytic import infer_labels, linear_input, param_key
from archscan.validate.attacks.layer_system import LayerSystem
from archscan.validate.attacks.solvers import solve_system
from archscan.validate.attacks.steps import Chain, Step


@dataclass
class State:
    """Value ``x`` at one point of the chain, ``g = dl/dx`` and which entries of ``x`` are known."""

    x: torch.Tensor
    g: torch.Tensor
    known: torch.Tensor


def rank_one_head(W: torch.Tensor, dW: torch.Tensor, label: int, grid: int = 2001):
    """Input and output gradient of a bias-free Linear head from ``dW = g x^T`` and the label.

    ``dW = s u v^T`` gives ``x = t v`` and ``g = (s/t) u`` for an unknown scalar ``t``.  With
    cross-entropy ``g = softmax(t W v) - e_y``, so ``t`` is a root of
    ``f(t) = t u^T (softmax(t W v) - e_y) - s``: bracket the roots on a log grid over both signs,
    bisect every bracket, keep the root whose ``g`` matches best.

    Returns
    -------
    tuple
        ``(x, g)`` as 1-D tensors.
    """
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    u, s, v = U[:, 0], S[0], Vh[0]
    zv, onehot = W @ v, F.one_hot(torch.tensor(label), W.shape[0]).to(W)

    def root_fn(t):
        return t * ((torch.softmax(t[:, None] * zv, -1) - onehot) @ u) - s

    mags = torch.logspace(-8, 8, grid, dtype=W.dtype, device=W.device)
    t = torch.cat([-mags.flip(0), mags])
    f = root_fn(t)
    lo = torch.nonzero((f[:-1] * f[1:]) <= 0).flatten()
    if len(lo) == 0:
        raise ValueError("rank-one head: no scale reproduces the observed gradient")
    a, b = t[lo], t[lo + 1]
    for _ in range(200):  # bisection to machine precision, all brackets at once
        mid = (a + b) / 2
        left = root_fn(a) * root_fn(mid) <= 0
        a, b = torch.where(left, a, mid), torch.where(left, mid, b)
    roots = (a + b) / 2
    misfit = (torch.softmax(roots[:, None] * zv, -1) - onehot - (s / roots)[:, None] * u).norm(dim=1)
    best = roots[misfit.argmin()]
    return best * v, (s / best) * u


def top_state(chain: Chain, grads: dict, label: int | None) -> State:
    """State at the head's input: from the bias trick, or rank one plus the label without bias."""
    head = chain.steps[chain.head]
    W = head.module.weight
    dW = grads[param_key(head.name, "weight")]
    db = grads.get(param_key(head.name, "bias")) if head.module.bias is not None else None
    if db is not None:
        x, g = linear_input(dW, db), db
    else:
        label = int(infer_labels(dW)[0]) if label is None else label
        x, g = rank_one_head(W, dW, label)
    ones = torch.ones((1, *head.in_shape), dtype=torch.bool, device=W.device)
    return State(x.view(1, -1), (g @ W).view(1, -1), ones)


def descend_elementwise(step: Step, state: State, relu_tol: float = 1e-9) -> State:
    """Move the state from the output of a reshape/activation step to its input.

    ReLU outputs within ``relu_tol * max|x|`` of zero count as inactive: a recovered value of
    1e-13 is a zero output with rounding error, and calling it active would corrupt ``g``.
    """
    if step.kind == "reshape":
        shape = (1, *step.in_shape)
        return State(state.x.reshape(shape), state.g.reshape(shape), state.known.reshape(shape))
    y = state.x
    if step.act == "relu":
        y = torch.where(y > relu_tol * y.abs().max(), y, torch.zeros_like(y))
    u, known = act_inverse(step, y)
    g = act_slope(step, y) * state.g
    known = known & state.known
    return State(torch.where(known, u, torch.zeros_like(u)), g, known)


def solve_layer(system: LayerSystem, settings: dict, x0: torch.Tensor | None = None):
    """Least-squares input of one layer: ``(x, iterations)`` with the chosen solver."""
    if x0 is None:
        x0 = torch.zeros(system.x_shape, dtype=system.g.dtype, device=system.g.device)
    return solve_system(system, settings, x0)


def linear_start(system: LayerSystem, dW: torch.Tensor):
    """Closed-form start for a Linear layer: ``x = g^T dW / |g|^2`` (exact for batch one)."""
    if system.step.kind != "linear" or float(system.g.norm()) == 0:
        return None
    return (system.g @ dW) / system.g.pow(2).sum()


def descend_layer(step: Step, state: State, grads: dict, settings: dict, refine=None, start=None):
    """Solve a Conv2d/Linear layer for its input; return the new state and diagnostics.

    ``start`` (a number or a tensor) is where the least-squares solve starts, so the solution is
    the one closest to it (:func:`start_activations` gives one per layer); ``refine(step, system,
    x)`` (the hybrid attack) may improve the least-squares solution.
    """
    dW = grads[param_key(step.name, "weight")]
    system = LayerSystem(step, state.x, state.known, state.g, dW)
    x0 = linear_start(system, dW)
    if x0 is None and start is not None:
        x0 = (start.reshape(system.x_shape).to(system.g) if torch.is_tensor(start) else
              torch.full(system.x_shape, float(start), dtype=system.g.dtype, device=system.g.device))
    x, iters = solve_layer(system, settings, x0)
    info = {"layer": step.name, "kind": step.kind, "unknowns": math.prod(step.in_shape),
            "solver_iterations": iters, "residual": system.residual(x),
            "bias_check": bias_check(step, state.g, grads)}
    if refine is not None:
        x, extra = refine(step, system, x)
        info.update(extra)
    g = system.forward_rows_t(state.g, masked=False)  # A^T g over all outputs
    ones = torch.ones_like(x, dtype=torch.bool)
    return State(x, g, ones), info


def bias_check(step: Step, g: torch.Tensor, grads: dict):
    """Relative mismatch between the observed bias gradient and the one implied by ``g``."""
    db = grads.get(param_key(step.name, "bias"))
    if db is None or step.module.bias is None:
        return None
    implied = g.sum(dim=(0, 2, 3)) if step.kind == "conv" else g.sum(0)
    return float((implied - db).norm() / db.norm().clamp_min(1e-300))
