"""Inverting Gradients (Geiping et al. 2020): cosine gradient matching with a TV prior.

A dummy image ``x`` in ``[0, 1]`` is optimised with Adam (signed gradients, learning rate decayed
by 10 at 3/8, 5/8 and 7/8 of the run) to minimise

    1 - <grad(x), grad*> / (|grad(x)| |grad*|) + tv * TV(x)

where dot products and norms are summed over all parameter gradients, with the box constraint
enforced by clamping after every step.  ``restarts`` random starts run, the lowest final objective
wins (per problem).

Batching: all independent problems (one per image for per-sample targets, or one summed batch)
and all restarts run at once.  The per-problem parameter gradients come from ``torch.func.vmap``
over ``torch.func.grad`` of a functional call of the model, and the outer objective is the sum
of the per-problem objectives.  Since Adam, the sign and the clamp act element-wise, every
problem follows exactly the trajectory it would follow alone: parallel independent attacks.
"""
from __future__ import annotations

import torch

from archscan.validate.attacks.analytic import labels_per_problem
from archscan.validate.attacks.base import (
    Attack,
    Target,
    batched_gradient_fn,
    cosine_distance,
    make_generator,
    prepare_model,
    total_variation,
)


def gradient_objective(grad_fn, names: list, observed: list, x: torch.Tensor, y: torch.Tensor,
                       tv: float) -> torch.Tensor:
    """Per-problem IG objective: cosine distance of all parameter gradients + ``tv`` * mean TV.

    Parameters
    ----------
    grad_fn : callable
        From :func:`~archscan.attacks.base.batched_gradient_fn`.
    names : list of str
        Parameter names, in the order of ``observed``.
    observed : list of torch.Tensor
        Observed gradients, each with a leading problem dimension.
    x : torch.Tensor
        Dummies ``P x m x C x H x W``.
    y : torch.Tensor
        Labels ``P x m``.
    tv : float
        Weight of the total-variation prior.

    Returns
    -------
    torch.Tensor
        Objective of each problem, shape ``(P,)``.
    """
    grads = grad_fn(x, y)
    return cosine_distance([grads[n] for n in names], observed) + tv * total_variation(x).mean(dim=1)


def repeated_observations(target: Target, names: list, restarts: int) -> list:
    """Observed gradients with a leading ``restarts * P`` dimension (restart ``r`` is block ``r``)."""
    stacked = target.stacked_gradients()
    out = []
    for n in names:
        grad = stacked[n].to(target.device, target.dtype)
        out.append(grad.repeat(restarts, *[1] * (grad.dim() - 1)))
    return out


def decayed_adam(param: torch.Tensor, lr: float, iterations: int):
    """Adam with Geiping et al.'s step decay (x0.1 at 3/8, 5/8 and 7/8 of the run)."""
    opt = torch.optim.Adam([param], lr=lr)
    milestones = [iterations * 3 // 8, iterations * 5 // 8, iterations * 7 // 8]
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)


class InvertingGradients(Attack):
    """Inverting Gradients attack.

    Settings: ``iterations`` (Adam steps), ``lr``, ``tv`` (total-variation weight), ``restarts``,
    ``signed`` (use the sign of the gradient, as the paper), ``record_every`` (objective history).
    """

    name = "ig"
    defaults = {"iterations": 1000, "lr": 0.1, "tv": 1e-2, "restarts": 1, "signed": True,
                "record_every": 10}

    def _run(self, target: Target, seed: int):
        """Optimise all problems and restarts together; keep each problem's best restart."""
        model = prepare_model(target.model, target.device, target.dtype)
        gen = make_generator(seed, target.device)
        names = [n for n, _ in model.named_parameters() if n in target.gradients]
        grad_fn = batched_gradient_fn(model, names)
        restarts, labels = self.settings["restarts"], labels_per_problem(target)
        observed = repeated_observations(target, names, restarts)
        problems, per = labels.shape
        x = torch.rand((restarts * problems, per, *target.input_shape), generator=gen,
                       device=target.device, dtype=target.dtype)
        y = labels.repeat(restarts, 1)
        x, history = self._optimise(grad_fn, names, observed, x, y)
        with torch.no_grad():
            final = gradient_objective(grad_fn, names, observed, x, y, self.settings["tv"])
        history.append(float(final.mean()))  # the objective after the last step
        final = final.view(restarts, problems)
        best = final.argmin(0)
        every = torch.arange(problems, device=x.device)
        chosen = x.view(restarts, problems, per, *target.input_shape)[best, every]
        info = {"objective": history, "final_objective": final.min(0).values.tolist(),
                "batching": "vmap over torch.func.grad: problems x restarts in parallel"}
        return chosen.reshape(-1, *target.input_shape), self.settings["iterations"], labels.flatten(), info

    def _optimise(self, grad_fn, names, observed, x, y):
        """Signed Adam with box clamping; returns the dummies and the mean-objective history."""
        s = self.settings
        x = x.clone().requires_grad_(True)
        opt, sched = decayed_adam(x, s["lr"], s["iterations"])
        history = []
        for it in range(s["iterations"]):
            opt.zero_grad(set_to_none=True)
            objective = gradient_objective(grad_fn, names, observed, x, y, s["tv"])
            if it % s["record_every"] == 0:
                history.append(float(objective.detach().mean()))
            objective.sum().backward(inputs=[x])  # sum of independent objectives: no coupling
            if s["signed"]:
                x.grad.sign_()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0, 1)
        return x.detach(), history
