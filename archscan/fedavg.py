"""FedAvg local training as a threat-model setting: the client runs ``E`` steps of SGD at learning
rate ``lr`` on its batch and shares the weight change instead of one gradient.

The shared quantity is the *average gradient along the client's path*,

    u = (w_0 - w_E) / (E * lr),      w_{e+1} = w_e - lr * grad L(w_e; x),

with ``L`` the cross-entropy summed over the client's batch (the gradient's convention: with a
mean loss use ``lr / B``).  Dividing by the known ``E * lr`` keeps the units of a gradient, so
``E = 1`` is exactly today's gradient, a small ``lr`` tends to the gradient at ``w_0``, and every
downstream figure (defence noise, norms, cosine matches) reads the same for any ``E``.

Two implementations, on purpose: :func:`unrolled` differentiates through the steps
(``torch.func``: the optimisation view's Jacobian and the optimisation attacks' simulated update),
:func:`client_update` is what the client really runs (autograd and in-place SGD on a copy), and
a test holds them equal.  The closed-form attacks and the layer chain reason about one gradient
at the shared weights; with ``E > 1`` they do not apply and say so (docs/theory.md, "FedAvg").
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from archscan.errors import InputError

DEFAULT_LR = 0.01


@dataclass(frozen=True)
class LocalSteps:
    """``steps`` of SGD at learning rate ``lr`` before the client shares its update."""

    steps: int = 1
    lr: float = DEFAULT_LR

    @property
    def unrolled(self) -> bool:
        """More than one step: the shared update is not one gradient at the shared weights."""
        return self.steps > 1

    def to_dict(self) -> dict:
        return {"local_steps": self.steps, "lr": self.lr}

    def __str__(self) -> str:
        return f"FedAvg {self.steps} local SGD step{'s' if self.steps > 1 else ''} at lr {self.lr:g}"


def local_steps(steps, lr, where: str = "--fedavg-steps/--fedavg-lr") -> LocalSteps:
    """Checked :class:`LocalSteps` from user values (None: the defaults); an InputError names the bad one."""
    steps = 1 if steps is None else steps
    lr = DEFAULT_LR if lr is None else lr
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10_000:
        raise InputError(f"{where}: local steps must be a whole number in 1..10000 (got {steps!r})")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise InputError(f"{where}: the learning rate must be a positive number (got {lr!r})")
    return LocalSteps(int(steps), float(lr))


def unrolled(grad_fn, local: LocalSteps | None):
    """The shared update as a function of the same arguments as ``grad_fn``.

    ``grad_fn(params, *args) -> {name: gradient}`` (a ``torch.func.grad`` of the loss); the result
    ``u(params, *args)`` runs ``local.steps`` SGD steps from ``params`` and returns the average
    gradient along the path, differentiable in ``args`` (and composable with vmap/jvp/vjp).
    ``grad_fn`` itself when there is one step.
    """
    if local is None or not local.unrolled:
        return grad_fn

    def update(params, *args):
        w = params
        total = {k: torch.zeros_like(v) for k, v in params.items()}
        for _ in range(local.steps):
            g = grad_fn(w, *args)
            total = {k: total[k] + g[k] for k in total}
            w = {k: w[k] - local.lr * g[k] for k in w}
        return {k: v / local.steps for k, v in total.items()}
    return update


def client_update(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, local: LocalSteps) -> dict:
    """What the client shares after ``local.steps`` SGD steps on ``(images, labels)``:
    ``(w_0 - w_E) / (E * lr)`` per parameter that requires grad (the model is not modified)."""
    net = copy.deepcopy(model)
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    start = {n: p.detach().clone() for n, p in named}
    for _ in range(local.steps):
        loss = F.cross_entropy(net(images), labels, reduction="sum")
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        with torch.no_grad():
            for (_, p), g in zip(named, grads):
                if g is not None:
                    p.sub_(local.lr * g)
    return {n: (start[n] - p.detach()) / (local.steps * local.lr) for n, p in named}


def suffix(fedavg: dict | None) -> str:
    """``", FedAvg 5 local SGD steps at lr 0.01"`` for a threat-model line (its ``fedavg`` entry);
    '' for one step."""
    f = fedavg or {}
    if f.get("local_steps", 1) <= 1:
        return ""
    return f", {LocalSteps(f['local_steps'], f['lr'])}"


def chain_note(local: LocalSteps) -> str:
    """Why the chain does not decide under local steps (the verdict's note)."""
    return (f"the client shares the weight change of {local.steps} local SGD steps (lr {local.lr:g}), not one "
            "gradient: the closed-form chain counts one gradient's equations, so the verdict is the "
            "optimisation view's (the linearised map from the image to the shared update)")
