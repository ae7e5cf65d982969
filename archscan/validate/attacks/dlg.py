"""Deep Leakage from Gradients (Zhu et al. 2019): L2 gradient matching with L-BFGS.

A dummy batch (and, in the original, dummy soft labels) is optimised with L-BFGS to minimise
``sum over parameters |grad(dummy) - grad*|^2``.  Labels: the given ones if the target reveals
them; otherwise ``label_mode="idlg"`` uses the label inferred from the output layer (iDLG, Zhao et
al. 2020) and ``label_mode="dummy"`` optimises soft label logits jointly, as the original DLG.

The original runs L-BFGS without a line search; here ``line_search="strong_wolfe"`` is the
default because the fixed step diverges to NaN on many seeds (``None`` restores the original).
There is no box constraint during the optimisation (L-BFGS needs a smooth, unconstrained
problem); the result is clamped to ``[0, 1]``.

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
)


def l2_gradient_distance(grads: dict, observed: dict) -> torch.Tensor:
    """``sum |g - g*|^2`` over all parameters (one problem, leading dimension 1)."""
    return sum((grads[n] - observed[n]).pow(2).sum() for n in observed)


class DLG(Attack):
    """DLG / iDLG attack.

    Settings: ``iterations`` (L-BFGS outer steps), ``inner`` (L-BFGS iterations per step),
    ``lr``, ``history_size``, ``line_search`` (``"strong_wolfe"`` or None), ``label_mode``
    (``"idlg"`` or ``"dummy"``, used only when labels are not revealed).
    """

    name = "dlg"
    defaults = {"iterations": 50, "inner": 20, "lr": 1.0, "history_size": 100,
                "line_search": "strong_wolfe", "label_mode": "idlg"}

    def __init__(self, **settings):
        super().__init__(**settings)
        if self.settings["label_mode"] not in ("idlg", "dummy"):
            raise ValueError(f"unknown label_mode {self.settings['label_mode']!r}; "
                             "choose from 'idlg', 'dummy'")

    def _run(self, target: Target, seed: int):
        """One L-BFGS run per independent problem."""
        model = prepare_model(target.model, target.device, target.dtype)
        gen = make_generator(seed, target.device)
        names = [n for n, _ in model.named_parameters() if n in target.gradients]
        dummy_labels = target.labels is None and self.settings["label_mode"] == "dummy"
        labels = None if dummy_labels else labels_per_problem(target)
        images, used, histories, iterations = [], [], [], 0
        for index, prob in enumerate(target.problems()):
            observed = {n: prob.gradients[n].to(target.device, target.dtype).unsqueeze(0) for n in names}
            y = None if labels is None else labels[index]
            x, y_used, history, steps = self._attack_one(model, names, observed, prob, y, gen)
            images.append(x)
            used.append(y_used)
            histories.append(history)
            iterations += steps
        info = {"objective": histories[0] if len(histories) == 1 else histories,
                "label_mode": "given" if target.labels is not None else self.settings["label_mode"]}
        return torch.cat(images), iterations, torch.cat(used), info

    def _attack_one(self, model, names, observed, prob: Target, y, gen):
        """L-BFGS on one problem; returns ``(images, labels, objective history, iterations)``."""
        s = self.settings
        shape = (1, prob.batch_size, *prob.input_shape)
        x = torch.rand(shape, generator=gen, device=prob.device, dtype=prob.dtype).requires_grad_(True)
        variables, soft = [x], y is None
        if soft:  # original DLG: soft labels from logits optimised with the image
            classes = model(x[0].detach()).shape[-1]
            y = torch.randn((1, prob.batch_size, classes), generator=gen, device=prob.device,
                            dtype=prob.dtype).requires_grad_(True)
            variables.append(y)
        else:
            y = y.view(1, -1)
        grad_fn = batched_gradient_fn(model, names, soft_labels=soft)
        opt = torch.optim.LBFGS(variables, lr=s["lr"], max_iter=s["inner"], history_size=s["history_size"],
                                line_search_fn=s["line_search"])

        def closure():
            opt.zero_grad(set_to_none=True)
            value = l2_gradient_distance(grad_fn(x, y), observed)
            value.backward(inputs=variables)
            return value

        def current():
            with torch.no_grad():  # torch.func.grad still differentiates inside
                return float(l2_gradient_distance(grad_fn(x, y), observed))

        history = [current()]
        best = (history[0], x.detach().clone(), y.detach().clone())
        for _ in range(s["iterations"]):
            opt.step(closure)
            history.append(current())
            if history[-1] < best[0]:  # keep the best iterate: L-BFGS can blow up to NaN
                best = (history[-1], x.detach().clone(), y.detach().clone())
        steps = opt.state[x].get("n_iter", 0)
        labels = best[2].argmax(-1).view(-1) if soft else best[2].view(-1)
        return best[1][0], labels, history, steps
