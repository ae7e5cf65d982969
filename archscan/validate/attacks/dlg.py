"""Deep Leakage from Gradients (Zhu et al. 2019): L2 gradient matching with L-BFGS.

A dummy batch (and, in the original, dummy soft labels) is optimised with L-BFGS to minimise
``sum over parameters |grad(dummy) - grad*|^2``.  Labels: the given ones if the target reveals
them; otherwise ``label_mode="idlg"`` uses the label inferred from the output layer (iDLG, Zhao et
al. 2020) and ``label_mode="dummy"`` optimises soft label logits jointly, as the original DLG.

The original runs L-BFGS without a line search; here ``line_search="strong_wolfe"`` is the
default because the fixed step diverges to NaN on many seeds (``None`` restores the original).
There is no box constraint during the optimisation (L-BFGS needs a smooth, unconstrained
problem); the result is clamped to ``[0, 1]``.

Variants for the tuned sweep (defaults as the original): ``tv`` adds ``tv * |grad*|^2 * TV(x)``
to the objective (the weight is relative to the observed gradient's energy, so that the objective
over ``|grad*|^2`` is the relative L2 distance plus ``tv * TV``, comparable across models); ``init`` starts from uniform noise (``"random"``), the constant 0.5 (``"grey"``) or the
prior mean image (``"prior"``); ``restarts`` runs that many starts one after the other (later
starts of a deterministic init add uniform noise of amplitude ``jitter``) and keeps, per problem,
the one with the lowest final objective.

Independent problems (per-sample targets) are attacked one after the other: L-BFGS keeps one
curvature history and one line search for all its variables, so batching problems into one
L-BFGS would couple them.
"""
from __future__ import annotations

import torch

from archscan.validate.attacks.analytic import labels_per_problem
from archscan.validate.attacks.base import (
    Attack,
    Target,
    batched_gradient_fn,
    make_generator,
    prepare_model,
    total_variation,
)

INITS = ("random", "grey", "prior")


def l2_gradient_distance(grads: dict, observed: dict) -> torch.Tensor:
    """``sum |g - g*|^2`` over all parameters (one problem, leading dimension 1)."""
    return sum((grads[n] - observed[n]).pow(2).sum() for n in observed)


class DLG(Attack):
    """DLG / iDLG attack.

    Settings: ``iterations`` (L-BFGS outer steps), ``inner`` (L-BFGS iterations per step),
    ``lr``, ``history_size``, ``line_search`` (``"strong_wolfe"`` or None), ``label_mode``
    (``"idlg"`` or ``"dummy"``, used only when labels are not revealed), ``tv``, ``init``,
    ``restarts`` and ``jitter`` (see the module docstring).
    """

    name = "dlg"
    simulates_local_steps = True   # matches the unrolled client update (archscan.fedavg)
    defaults = {"iterations": 50, "inner": 20, "lr": 1.0, "history_size": 100,
                "line_search": "strong_wolfe", "label_mode": "idlg", "tv": 0.0, "init": "random",
                "restarts": 1, "jitter": 0.1}

    def __init__(self, **settings):
        super().__init__(**settings)
        if self.settings["label_mode"] not in ("idlg", "dummy"):
            raise ValueError(f"unknown label_mode {self.settings['label_mode']!r}; "
                             "choose from 'idlg', 'dummy'")
        if self.settings["init"] not in INITS:
            raise ValueError(f"unknown init {self.settings['init']!r}; choose from {', '.join(INITS)}")

    def _run(self, target: Target, seed: int):
        """One L-BFGS run per independent problem."""
        model = prepare_model(target.model, target.device, target.dtype)
        gen = make_generator(seed, target.device)
        names = [n for n, _ in model.named_parameters() if n in target.gradients]
        dummy_labels = target.labels is None and self.settings["label_mode"] == "dummy"
        labels = None if dummy_labels else labels_per_problem(target)
        prior = None
        if self.settings["init"] == "prior":
            from archscan.validate.attacks.prior import prior_mean_image
            prior = prior_mean_image(target.input_shape, seed, dtype=target.dtype, device=target.device)
        images, used, histories, finals, iterations = [], [], [], [], 0
        for index, prob in enumerate(target.problems()):
            observed = {n: prob.gradients[n].to(target.device, target.dtype).unsqueeze(0) for n in names}
            y = None if labels is None else labels[index]
            best = None
            for restart in range(int(self.settings["restarts"])):
                run = self._attack_one(model, names, observed, prob, y, gen, restart, prior)
                iterations += run[4]
                if best is None or run[3] < best[3] or best[3] != best[3]:  # lowest final objective; NaN loses
                    best = run
            images.append(best[0])
            used.append(best[1])
            histories.append(best[2])
            finals.append(best[3])
        info = {"objective": histories[0] if len(histories) == 1 else histories, "final_objective": finals,
                "label_mode": "given" if target.labels is not None else self.settings["label_mode"]}
        return torch.cat(images), iterations, torch.cat(used), info

    def _start(self, shape, prob: Target, gen, restart: int, prior):
        """The start image of one run (drawn from ``gen`` for a random start or a jittered restart)."""
        s = self.settings
        if s["init"] == "random":
            return torch.rand(shape, generator=gen, device=prob.device, dtype=prob.dtype)
        base = (torch.full(shape, 0.5, device=prob.device, dtype=prob.dtype) if s["init"] == "grey"
                else prior.expand(shape).clone())
        if restart == 0:
            return base
        noise = torch.rand(shape, generator=gen, device=prob.device, dtype=prob.dtype)
        return (base + float(s["jitter"]) * (2 * noise - 1)).clamp(0, 1)

    def _attack_one(self, model, names, observed, prob: Target, y, gen, restart: int = 0, prior=None):
        """L-BFGS on one problem; returns ``(images, labels, history, best objective, iterations)``."""
        s = self.settings
        shape = (1, prob.batch_size, *prob.input_shape)
        x = self._start(shape, prob, gen, restart, prior).requires_grad_(True)
        tv = float(s["tv"]) * float(sum(o.pow(2).sum() for o in observed.values()))
        variables, soft = [x], y is None
        if soft:  # original DLG: soft labels from logits optimised with the image
            classes = model(x[0].detach()).shape[-1]
            y = torch.randn((1, prob.batch_size, classes), generator=gen, device=prob.device,
                            dtype=prob.dtype).requires_grad_(True)
            variables.append(y)
        else:
            y = y.view(1, -1)
        grad_fn = batched_gradient_fn(model, names, soft_labels=soft, fedavg=prob.fedavg)
        opt = torch.optim.LBFGS(variables, lr=s["lr"], max_iter=s["inner"], history_size=s["history_size"],
                                line_search_fn=s["line_search"])

        def objective():
            value = l2_gradient_distance(grad_fn(x, y), observed)
            return value + tv * total_variation(x).sum() if tv else value

        def closure():
            opt.zero_grad(set_to_none=True)
            value = objective()
            value.backward(inputs=variables)
            return value

        def current():
            with torch.no_grad():  # torch.func.grad still differentiates inside
                return float(objective())

        history = [current()]
        best = (history[0], x.detach().clone(), y.detach().clone())
        for _ in range(s["iterations"]):
            opt.step(closure)
            history.append(current())
            if history[-1] < best[0]:  # keep the best iterate: L-BFGS can blow up to NaN
                best = (history[-1], x.detach().clone(), y.detach().clone())
        steps = opt.state[x].get("n_iter", 0)
        labels = best[2].argmax(-1).view(-1) if soft else best[2].view(-1)
        return best[1][0], labels, history, best[0], steps
