"""Inverting Gradients (Geiping et al. 2020): cosine gradient matching with a TV prior.

A dummy image ``x`` in ``[0, 1]`` is optimised with Adam (signed gradients, learning rate decayed
by 10 at 3/8, 5/8 and 7/8 of the run) to minimise

    1 - <grad(x), grad*> / (|grad(x)| |grad*|) + tv * TV(x)

where dot products and norms are summed over all parameter gradients, with the box constraint
enforced by clamping after every step.  ``restarts`` random starts run, the lowest final objective
wins (per problem).

Variants (settings, defaults as the paper): ``init`` - where a run starts: ``"random"`` uniform
noise, ``"grey"`` the constant 0.5, or ``"prior"`` the mean of the natural-image prior crops
(:func:`~archscan.attacks.prior.prior_mean_image`); restarts after the first of a deterministic
start add uniform noise of amplitude ``jitter``.  ``loss`` - ``"cosine"`` or ``"l2"``, the
relative squared distance ``|grad(x) - grad*|^2 / |grad*|^2``.  ``signed`` - Adam on the sign of
the gradient (the paper) or on the gradient itself.

Batching: all independent problems (one per image for per-sample targets, or one summed batch),
all restarts and -- through :meth:`InvertingGradients.reconstruct_grid` -- all configurations
that share an iteration count run as rows of one tensor.  The per-row parameter gradients come
from ``torch.func.vmap`` over ``torch.func.grad`` of a functional call of the model, and the outer
objective is the sum of the per-row objectives.  The TV weight, learning rate, sign and loss are
per-row tensors and Adam (:class:`RowAdam`, the arithmetic of ``torch.optim.Adam``) acts
element-wise, so every row follows exactly the trajectory it would follow alone: a grid costs one
batched run, not one run per configuration.
"""
from __future__ import annotations

import time
from collections import Counter

import torch

from archscan.validate.attacks.analytic import labels_per_problem
from archscan.validate.attacks.base import (
    Attack,
    Reconstruction,
    Target,
    batched_gradient_fn,
    cosine_distance,
    make_generator,
    prepare_model,
    total_variation,
)

INITS = ("random", "grey", "prior")
LOSSES = ("cosine", "l2")


def gradient_objective(grad_fn, names: list, observed: list, x: torch.Tensor, y: torch.Tensor,
                       tv, l2: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row IG objective: gradient distance + ``tv`` * mean TV.

    Parameters
    ----------
    grad_fn : callable
        From :func:`~archscan.attacks.base.batched_gradient_fn`.
    names : list of str
        Parameter names, in the order of ``observed``.
    observed : list of torch.Tensor
        Observed gradients, each with a leading row dimension.
    x : torch.Tensor
        Dummies ``R x m x C x H x W``.
    y : torch.Tensor
        Labels ``R x m``.
    tv : float or torch.Tensor
        Weight of the total-variation prior (a scalar, or one per row).
    l2 : torch.Tensor or None
        Boolean per row: use the relative L2 distance instead of the cosine distance.

    Returns
    -------
    torch.Tensor
        Objective of each row, shape ``(R,)``.
    """
    grads = grad_fn(x, y)
    mine = [grads[n] for n in names]
    data = cosine_distance(mine, observed)
    if l2 is not None and bool(l2.any()):
        data = torch.where(l2, relative_l2(mine, observed), data)
    return data + tv * total_variation(x).mean(dim=1)


def relative_l2(grads: list, observed: list) -> torch.Tensor:
    """``|g - g*|^2 / |g*|^2`` over the concatenation of all parameter gradients, per row."""
    diff = sum((g - o).pow(2).flatten(1).sum(1) for g, o in zip(grads, observed))
    norm = sum(o.pow(2).flatten(1).sum(1) for o in observed)
    return diff / norm.clamp_min(torch.finfo(diff.dtype).tiny)


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
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones(iterations), gamma=0.1)


def milestones(iterations: int) -> list:
    """Steps after which the learning rate drops by 10: 3/8, 5/8 and 7/8 of the run."""
    return [iterations * 3 // 8, iterations * 5 // 8, iterations * 7 // 8]


class RowAdam:
    """Adam with one learning rate per row, and optionally the sign of the gradient per row.

    The update is ``torch.optim.Adam``'s (single-tensor, no weight decay, no amsgrad) operation
    for operation, with the learning rate a tensor broadcast over each row; the learning rate
    decays as ``MultiStepLR(milestones(iterations), gamma=0.1)``.  One row thus follows the path
    ``torch.optim.Adam`` + ``MultiStepLR`` give it alone.
    """

    def __init__(self, x: torch.Tensor, lr: torch.Tensor, iterations: int, betas=(0.9, 0.999), eps=1e-8):
        self.x, self.betas, self.eps = x, betas, eps
        self.lr = lr.to(x).view(-1, *[1] * (x.dim() - 1)).clone()
        self.m, self.v, self.t = torch.zeros_like(x), torch.zeros_like(x), 0
        self.milestones = Counter(milestones(iterations))
        self._decay(0)  # as MultiStepLR's initial step: a milestone at 0 applies at once

    def _decay(self, epoch: int):
        if epoch in self.milestones:
            self.lr = self.lr * 0.1 ** self.milestones[epoch]

    @torch.no_grad()
    def step(self, grad: torch.Tensor):
        """One Adam step of ``x`` along ``grad``, then the schedule's step."""
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = self.lr / (1 - b1 ** self.t)
        denom = (self.v.sqrt() / ((1 - b2 ** self.t) ** 0.5)).add_(self.eps)
        self.x.add_(-step_size * self.m / denom)
        self._decay(self.t)


def _rows(target: Target, configs: list, gen: torch.Generator, seed: int):
    """Start images and per-row hyperparameters of ``configs`` (config-major, restart, problem).

    Random starts are drawn once, ``max(restarts) * P`` of them as the single-configuration run
    draws them, and shared: restart ``r`` of problem ``p`` starts from the same noise in every
    configuration with a random start (so configurations differ only in their settings).
    """
    labels = labels_per_problem(target)
    problems, per = labels.shape
    shape = (per, *target.input_shape)
    most = max(int(c["restarts"]) for c in configs)
    noise = torch.rand((most * problems, *shape), generator=gen, device=target.device, dtype=target.dtype)
    prior = None
    starts, rows = [], {"config": [], "tv": [], "lr": [], "signed": [], "l2": []}
    for ci, c in enumerate(configs):
        if c["init"] not in INITS:
            raise ValueError(f"unknown init {c['init']!r}; choose from {', '.join(INITS)}")
        if c["loss"] not in LOSSES:
            raise ValueError(f"unknown loss {c['loss']!r}; choose from {', '.join(LOSSES)}")
        if c["init"] == "prior" and prior is None:
            from archscan.validate.attacks.prior import prior_mean_image
            prior = prior_mean_image(target.input_shape, seed, dtype=target.dtype, device=target.device)
        for r in range(int(c["restarts"])):
            block = noise[r * problems:(r + 1) * problems]
            if c["init"] == "random":
                x0 = block
            else:
                base = torch.full_like(block, 0.5) if c["init"] == "grey" else prior.expand_as(block)
                x0 = base if r == 0 else (base + float(c["jitter"]) * (2 * block - 1)).clamp(0, 1)
            starts.append(x0)
            rows["config"] += [ci] * problems
            rows["tv"] += [float(c["tv"])] * problems
            rows["lr"] += [float(c["lr"])] * problems
            rows["signed"] += [bool(c["signed"])] * problems
            rows["l2"] += [c["loss"] == "l2"] * problems
    dev = target.device
    plan = {"config": torch.tensor(rows["config"], device=dev),
            "tv": torch.tensor(rows["tv"], device=dev, dtype=target.dtype),
            "lr": torch.tensor(rows["lr"], device=dev, dtype=target.dtype),
            "signed": torch.tensor(rows["signed"], device=dev),
            "l2": torch.tensor(rows["l2"], device=dev)}
    return torch.cat(starts), labels, plan


class InvertingGradients(Attack):
    """Inverting Gradients attack.

    Settings: ``iterations`` (Adam steps), ``lr``, ``tv`` (total-variation weight), ``restarts``,
    ``signed`` (use the sign of the gradient, as the paper), ``init`` (``"random"``, ``"grey"``,
    ``"prior"``), ``loss`` (``"cosine"`` or ``"l2"``), ``jitter`` (noise amplitude of the later
    restarts of a deterministic start), ``record_every`` (objective history).
    """

    name = "ig"
    simulates_local_steps = True   # matches the unrolled client update (archscan.fedavg)
    defaults = {"iterations": 1000, "lr": 0.1, "tv": 1e-2, "restarts": 1, "signed": True,
                "init": "random", "loss": "cosine", "jitter": 0.1, "record_every": 10}

    def _run(self, target: Target, seed: int):
        """Optimise all problems and restarts together; keep each problem's best restart."""
        out = self._run_rows(target, [self.settings], seed)[0]
        return out["images"], self.settings["iterations"], out["labels"], out["info"]

    def reconstruct_grid(self, target: Target, configs: list, seed: int = 0) -> list:
        """One :class:`Reconstruction` per configuration, batched into as few runs as possible.

        ``configs`` are settings overrides of this attack; those sharing ``iterations`` and
        ``record_every`` run as the rows of one vmapped tensor program.  Each reconstruction's
        ``seconds`` is its share (by rows) of its batched run's wall time, ``info["batch_seconds"]``
        the run's whole time.
        """
        full = [{**self.settings, **c} for c in configs]
        reason = self.skip_reason(target)
        if reason is not None:
            return [Reconstruction(None, self.name, settings=c, skipped=reason) for c in full]
        groups: dict = {}
        for i, c in enumerate(full):
            groups.setdefault((int(c["iterations"]), int(c["record_every"])), []).append(i)
        out = [None] * len(full)
        for indices in groups.values():
            start = time.perf_counter()
            results = self._run_rows(target, [full[i] for i in indices], seed)
            if target.device.type == "cuda":
                torch.cuda.synchronize(target.device)
            seconds = time.perf_counter() - start
            rows = sum(int(full[i]["restarts"]) for i in indices)
            for i, res in zip(indices, results):
                share = seconds * int(full[i]["restarts"]) / rows
                res["info"]["batch_seconds"] = seconds
                res["info"]["batch_configurations"] = len(indices)
                out[i] = Reconstruction(res["images"].detach().clamp(0, 1), self.name, int(full[i]["iterations"]),
                                        share, {**full[i], "seed": seed}, None, res["labels"], res["info"])
        return out

    def _run_rows(self, target: Target, configs: list, seed: int) -> list:
        """Run ``configs`` (full settings, one iteration count) as rows of one batched program."""
        model = prepare_model(target.model, target.device, target.dtype)
        gen = make_generator(seed, target.device)
        names = [n for n, _ in model.named_parameters() if n in target.gradients]
        grad_fn = batched_gradient_fn(model, names, fedavg=target.fedavg)
        x, labels, plan = _rows(target, configs, gen, seed)
        problems, per = labels.shape
        repeats = len(plan["config"]) // problems
        observed = repeated_observations(target, names, repeats)
        y = labels.repeat(repeats, 1)
        l2 = plan["l2"] if bool(plan["l2"].any()) else None
        tv = plan["tv"] if len(configs) > 1 else float(configs[0]["tv"])
        s = configs[0]
        x, history = self._optimise(grad_fn, names, observed, x, y, tv, l2, plan, s["iterations"], s["record_every"])
        with torch.no_grad():
            final = gradient_objective(grad_fn, names, observed, x, y, tv, l2)
        every = torch.arange(problems, device=x.device)
        results, first = [], 0
        for ci, c in enumerate(configs):
            restarts = int(c["restarts"])
            rows = slice(first, first + restarts * problems)
            mine = final[rows].view(restarts, problems)
            best = mine.argmin(0)
            chosen = x[rows].view(restarts, problems, per, *target.input_shape)[best, every]
            hist = [float(h[rows].mean()) for h in history] + [float(final[rows].mean())]
            info = {"objective": hist, "final_objective": mine.min(0).values.tolist(),
                    "best_restart": best.tolist(),
                    "batching": "vmap over torch.func.grad: configurations x restarts x problems in parallel"}
            results.append({"images": chosen.reshape(-1, *target.input_shape), "labels": labels.flatten(),
                            "info": info})
            first += restarts * problems
        return results

    def _optimise(self, grad_fn, names, observed, x, y, tv, l2, plan, iterations, record_every):
        """Adam (signed per row) with box clamping; returns the dummies and per-row objective history."""
        x = x.clone().requires_grad_(True)
        opt = RowAdam(x, plan["lr"], iterations)
        signed = plan["signed"].view(-1, *[1] * (x.dim() - 1))
        all_signed, none_signed = bool(plan["signed"].all()), not bool(plan["signed"].any())
        history = []
        for it in range(iterations):
            objective = gradient_objective(grad_fn, names, observed, x, y, tv, l2)
            if it % record_every == 0:
                history.append(objective.detach())
            grad, = torch.autograd.grad(objective.sum(), [x])  # sum of independent objectives
            if all_signed:
                grad = grad.sign()
            elif not none_signed:
                grad = torch.where(signed, grad.sign(), grad)
            opt.step(grad)
            with torch.no_grad():
                x.clamp_(0, 1)
        return x.detach(), history
