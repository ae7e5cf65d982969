"""Hybrid attack (Chen & Campbell 2022): R-GAP's least squares, refined layer by layer.

Where a layer is under-determined, the least-squares input is wrong along the null space of its
system.  Going down the chain exactly as R-GAP does, the hybrid attack starts every layer's input
from that solution (the image layer from the solution closest to a mid-grey image) and refines it
with Adam (learning rate decayed by 10 at 3/8, 5/8 and 7/8 of the run) on

    cosine distance(gradients of this layer and all layers above, recomputed from the candidate,
                    observed gradients)
    + w * |U x - V|^2 / |V|^2       (the layer's own linear system as a soft penalty)
    + tv * TV(x)                    (only when x is the image)

for a fixed number of iterations, projecting onto the range of the activation below (the box
[0, 1] for the image) and keeping the best candidate seen, the starting point included.

Before refining, one extra seeded least-squares solve from a random start measures the layer's
null-space fraction; a layer that is numerically determined keeps its exact solution (the image
prior would otherwise trade exactness for smoothness).  Note why refinement can help at all: a
null-space move changes neither the layer's outputs nor its weight gradient, hence no gradient
above it; only the image prior (TV, box) and the activation ranges act on the null space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from archscan.validate.attacks.analytic import param_key
from archscan.validate.attacks.base import (
    cosine_distance,
    make_generator,
    prepare_model,
    total_variation,
)
from archscan.validate.attacks.rgap import (
    Chain,
    LayerSystem,
    RGAPAttack,
    build_chain,
    run_steps,
    solve_layer,
    trace_chain,
)

_RANGES = {"relu": (0.0, None), "softplus": (0.0, None), "tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


def _below(chain: Chain, index: int):
    """The nearest activation step below step ``index`` (None if only reshapes: the image)."""
    for step in reversed(chain.steps[:index]):
        if step.kind == "act":
            return step
        if step.kind != "reshape":
            return None
    return None


def _image_below(chain: Chain, index: int) -> bool:
    """True when the input of step ``index`` is (a reshaping of) the image."""
    return all(step.kind == "reshape" for step in chain.steps[:index])


def project(chain: Chain, index: int, x: torch.Tensor) -> torch.Tensor:
    """Clamp a candidate input of step ``index`` into the range of what produces it."""
    if _image_below(chain, index):
        return x.clamp(0, 1)
    act = _below(chain, index)
    if act is None:
        return x
    lo, hi = _RANGES.get(act.act, (None, None))
    if act.act == "elu":
        lo = -act.params[0]
    return x if lo is None and hi is None else x.clamp(lo, hi)


class _Matcher:
    """Gradient-matching objective for the input of one layer of the chain."""

    def __init__(self, chain: Chain, index: int, grads: dict, label: int, system: LayerSystem,
                 settings: dict):
        self.steps, self.system, self.settings = chain.steps[index:], system, settings
        self.image_shape = chain.input_shape if _image_below(chain, index) else None
        self.params, observed = [], []
        for step in self.steps:
            if step.kind in ("linear", "conv"):
                for attr in ("weight", "bias"):
                    param = getattr(step.module, attr)
                    if param is not None:
                        self.params.append(param)
                        observed.append(grads[param_key(step.name, attr)].unsqueeze(0))
        self.observed = observed
        self.label = torch.tensor([label], device=system.g.device)
        self.rhs_norm = system.rhs_flat().pow(2).sum().clamp_min(1e-300)  # one problem: K = 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Objective value of candidate ``x`` (differentiable)."""
        loss = F.cross_entropy(run_steps(self.steps, x), self.label, reduction="sum")
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        value = cosine_distance([g.unsqueeze(0) for g in grads], self.observed)[0]
        residual = (self.system.apply(x) - self.system.rhs_flat()).pow(2).sum() / self.rhs_norm
        weight = self.settings["residual_weight" if self.image_shape else "hidden_residual_weight"]
        value = value + weight * residual
        if self.image_shape is not None:
            value = value + self.settings["tv"] * total_variation(x.reshape(1, *self.image_shape))[0]
        return value


def refine_layer(chain: Chain, index: int, matcher: _Matcher, x0: torch.Tensor, settings: dict):
    """Adam on the matcher's objective from ``x0``; returns the best candidate and a history."""
    scale = max(float(x0.std()), 1e-3)  # step size relative to the layer's value range
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=settings["lr"] * scale)
    steps = settings["iterations"]  # decay by 10 at 3/8, 5/8, 7/8 of the run, as Geiping et al.
    milestones = [steps * 3 // 8, steps * 5 // 8, steps * 7 // 8]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)
    best, best_x, history = float("inf"), x0.clone(), []
    for _ in range(settings["iterations"] + 1):  # +1: the last evaluation scores the last step
        opt.zero_grad(set_to_none=True)
        value = matcher(x)
        history.append(float(value.detach()))
        if history[-1] < best:
            best, best_x = history[-1], x.detach().clone()
        if len(history) > settings["iterations"]:
            break
        value.backward(inputs=[x])
        opt.step()
        sched.step()
        with torch.no_grad():
            x.copy_(project(chain, index, x))
    return best_x, history


def null_fraction(system: LayerSystem, x: torch.Tensor, settings: dict, gen: torch.Generator) -> float:
    """Share of a random direction in the null space of the layer's system.

    The least-squares solution started from ``x + r`` is ``x + P_null r``, so one extra solve
    measures ``|P_null r| / |r|`` (about ``sqrt(deficiency / unknowns)``); ~0 means determined.
    """
    r = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    moved, _ = solve_layer(system, settings, x + r)
    return float((moved - x).norm() / r.norm())


class HybridAttack(RGAPAttack):
    """R-GAP's recursion with per-layer gradient-matching refinement (Chen & Campbell 2022).

    Settings: those of R-GAP, plus ``iterations`` (Adam steps per layer), ``lr`` (relative to the
    standard deviation of the layer's least-squares input), ``tv`` (image layer only),
    ``residual_weight`` / ``hidden_residual_weight`` (soft linear-system penalty on the image layer /
    on hidden layers, where no image prior competes with it), ``determined_tol`` (layers whose
    measured null-space fraction is below it keep their exact least-squares input) and R-GAP's
    ``image_start`` (0.5, or ``"prior"``: the image layer's solve starts at the prior mean image).

    Per-sample problems run one at a time through R-GAP's batched recursion (K = 1): the
    refinement is a per-image gradient-matching optimisation, not a batched least-squares solve.
    """

    name = "hybrid"
    defaults = {**RGAPAttack.defaults, "image_start": 0.5, "iterations": 200, "lr": 0.2, "tv": 0.3,
                "residual_weight": 1.0, "hidden_residual_weight": 1e4, "determined_tol": 1e-6}

    def applicable(self, model, input_shape: tuple | None = None) -> str | None:
        """R-GAP's conditions, restricted to chains (the refinement re-runs the chain above a layer)."""
        if input_shape is None:
            traced = trace_chain(model)
            return traced if isinstance(traced, str) else None
        chain = build_chain(prepare_model(model, next(model.parameters()).device, torch.float64), input_shape)
        return chain if isinstance(chain, str) else None

    def _run(self, target, seed: int, refine_factory=None):
        """R-GAP's run with the refinement hook installed."""
        images, iterations, labels, info = super()._run(target, seed, self._refiner)
        history = [layer["objective"] for problem in info["layers"] for layer in problem]
        info["objective_start"] = sum(h[0] for h in history)
        info["objective_end"] = sum(min(h) for h in history)
        # per problem: the best objective of the image layer's refinement (solved last)
        info["final_objective"] = [min(problem[-1]["objective"]) for problem in info["layers"]]
        return images, iterations, labels, info

    def _refiner(self, chain: Chain, grads: dict, label: torch.Tensor, seed: int):
        """Build the refine hook R-GAP calls after each layer's least-squares solve."""
        settings, gen = self.settings, make_generator(seed, grads[next(iter(grads))].device)

        def refine(step, system, x):
            index = chain.steps.index(step)
            null = null_fraction(system, x, settings, gen)
            if null < settings["determined_tol"]:  # nothing to refine: keep the exact solution
                return x, {"objective": [0.0], "refine_iterations": 0, "null_fraction": null}
            with torch.enable_grad():
                matcher = _Matcher(chain, index, grads, int(label[0]), system, settings)
                best, history = refine_layer(chain, index, matcher, x, settings)
            return best, {"objective": history, "refine_iterations": settings["iterations"],
                          "null_fraction": null}

        return refine
