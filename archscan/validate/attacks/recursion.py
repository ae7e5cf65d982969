"""The layer-by-layer recursion R-GAP's chain and DAG attacks share: the state at a point of the
model (value, gradient, which entries are known), the head's state, and one step down through an
element-wise op or a Conv2d/Linear layer (least squares on its stacked forward and gradient rows).

Every function handles K independent problems (one image each) at once, stacked on a leading
dimension: the states, the layer systems and the solvers are batched, the diagnostics are per
problem, and every problem's result is the one it would get alone (K = 1)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from archscan.validate.attacks.activations import act_inverse, act_slope
from archscan.validate.attacks.analytic import infer_labels, linear_input, param_key
from archscan.validate.attacks.layer_system import LayerSystem, norms, per_problem
from archscan.validate.attacks.solvers import solve_system
from archscan.validate.attacks.steps import Chain, Step


@dataclass
class State:
    """Value ``x`` at one point of the chain, ``g = dl/dx`` and which entries of ``x`` are known,
    for K problems stacked on the leading dimension."""

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


def top_state(chain: Chain, grads: dict, labels) -> State:
    """State at the head's input of every problem: from the bias trick, or rank one plus the label
    without bias (a loop over the K problems: each is a small closed form).

    ``grads`` holds the problems' gradients stacked ``(K, *param.shape)``; ``labels`` one label
    (or None: inferred) per problem.
    """
    head = chain.steps[chain.head]
    W = head.module.weight
    dW = grads[param_key(head.name, "weight")]
    db = grads.get(param_key(head.name, "bias")) if head.module.bias is not None else None
    xs, gs = [], []
    for k in range(len(dW)):
        if db is not None:
            x, g = linear_input(dW[k], db[k]), db[k]
        else:
            label = int(infer_labels(dW[k])[0]) if labels[k] is None else int(labels[k])
            x, g = rank_one_head(W, dW[k], label)
        xs.append(x.flatten())
        gs.append(g.flatten())
    ones = torch.ones((len(dW), *head.in_shape), dtype=torch.bool, device=W.device)
    return State(torch.stack(xs), torch.stack(gs) @ W, ones)


def descend_elementwise(step: Step, state: State, relu_tol: float = 1e-9) -> State:
    """Move the state from the output of a reshape/activation step to its input.

    ReLU outputs within ``relu_tol * max|x|`` of zero (the maximum over each problem's own
    tensor) count as inactive: a recovered value of 1e-13 is a zero output with rounding error,
    and calling it active would corrupt ``g``.
    """
    if step.kind == "reshape":
        shape = (state.x.shape[0], *step.in_shape)
        return State(state.x.reshape(shape), state.g.reshape(shape), state.known.reshape(shape))
    y = state.x
    if step.act == "relu":
        level = per_problem(y.abs().flatten(1).amax(1), y.dim())
        y = torch.where(y > relu_tol * level, y, torch.zeros_like(y))
    u, known = act_inverse(step, y)
    g = act_slope(step, y) * state.g
    known = known & state.known
    return State(torch.where(known, u, torch.zeros_like(u)), g, known)


def solve_layer(system: LayerSystem, settings: dict, x0: torch.Tensor | None = None):
    """Least-squares inputs of one layer's problems: ``(x, iterations (K,))`` with the chosen solver."""
    if x0 is None:
        x0 = torch.zeros(system.x_shape, dtype=system.g.dtype, device=system.g.device)
    return solve_system(system, settings, x0)


def linear_start(system: LayerSystem):
    """Closed-form start for a Linear layer: ``x_k = g_k^T dW_k / |g_k|^2`` (exact for batch one).

    ``(K, N)`` with NaN rows for problems whose ``g_k`` is zero; None for a conv.
    """
    if system.step.kind != "linear":
        return None
    num = (system.g.unsqueeze(1) @ system.dW).squeeze(1)
    den = system.g.pow(2).sum(1, keepdim=True)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.nan)


def start_point(system, start=None) -> torch.Tensor:
    """Where every problem's least-squares solve starts: the Linear closed form where it exists,
    else ``start`` (a number, or a tensor of one problem's input shape), else zero."""
    if start is None:
        x0 = torch.zeros(system.x_shape, dtype=system.g.dtype, device=system.g.device)
    elif torch.is_tensor(start):
        x0 = start.reshape(1, *system.x_shape[1:]).to(system.g).expand(system.x_shape).clone()
    else:
        x0 = torch.full(system.x_shape, float(start), dtype=system.g.dtype, device=system.g.device)
    closed = linear_start(system) if isinstance(system, LayerSystem) else None
    if closed is None:
        return x0
    return torch.where(closed.isnan().any(1, keepdim=True), x0, closed)


def descend_layer(step: Step, state: State, grads: dict, settings: dict, refine=None, start=None):
    """Solve a Conv2d/Linear layer for the inputs of all problems; return the new state and the
    diagnostics of every problem (a list of K dicts).

    ``start`` (a number or a tensor) is where the least-squares solve starts, so the solution is
    the one closest to it (:func:`start_activations` gives one per layer); ``refine(step, system,
    x)`` (the hybrid attack, one problem at a time: K = 1) may improve the least-squares solution.
    """
    dW = grads[param_key(step.name, "weight")]
    system = LayerSystem(step, state.x, state.known, state.g, dW)
    x, iters = solve_layer(system, settings, start_point(system, start))
    infos = layer_infos(step.name, step.kind, math.prod(step.in_shape), iters, system.residual(x),
                        bias_check(step, state.g, grads))
    if refine is not None:
        if len(infos) != 1:
            raise ValueError("the refine hook handles one problem at a time")
        x, extra = refine(step, system, x)
        infos[0].update(extra)
    g = system.forward_rows_t(state.g, masked=False)  # A^T g over all outputs
    ones = torch.ones_like(x, dtype=torch.bool)
    return State(x, g, ones), infos


def layer_infos(name: str, kind: str, unknowns: int, iterations, residuals, bias) -> list:
    """One diagnostics dict per problem from per-problem tensors (one host transfer each)."""
    return [{"layer": name, "kind": kind, "unknowns": unknowns, "solver_iterations": int(it),
             "residual": float(res), "bias_check": bc}
            for it, res, bc in zip(iterations.tolist(), residuals.tolist(), bias)]


def bias_check(step: Step, g: torch.Tensor, grads: dict) -> list:
    """Per problem: relative mismatch between the observed bias gradient and the one implied by
    ``g`` (a list of K floats, or of K Nones where the layer has no bias)."""
    db = grads.get(param_key(step.name, "bias"))
    if db is None or step.module.bias is None:
        return [None] * g.shape[0]
    implied = g.sum(dim=(2, 3)) if step.kind == "conv" else g
    return (norms(implied - db) / norms(db).clamp_min(1e-300)).tolist()
