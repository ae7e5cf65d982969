"""The one interface every reconstruction attack implements.

A :class:`Target` is what the attacker sees in federated learning: the architecture and weights
(``model``), the shape of one input image, the shared parameter gradients and, optionally, the labels.
An :class:`Attack` turns a target into a :class:`Reconstruction`.

Conventions (stated once, used everywhere):

* Images live in ``[0, 1]`` and are fed to the model as they are (no mean/std normalisation; put a
  normalisation inside the model if the threat model needs one).
* The shared gradient is the gradient of the cross-entropy loss **summed** over the batch
  (``reduction="sum"``), see :func:`observe_gradients`.
* ``per_sample=True`` targets hold one gradient per image (leading dimension B): B independent
  batch-1 attacks that an attack may run in parallel.  ``per_sample=False`` with B > 1 is one
  batch whose gradients were summed.
"""
from __future__ import annotations

import abc
import copy
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from archscan.fedavg import LocalSteps, client_update, unrolled


@dataclass(frozen=True)
class Target:
    """What the attacker observes.

    Parameters
    ----------
    model : nn.Module
        The architecture with its weights, normally in eval mode.
    input_shape : tuple of int
        Shape of one image, ``(C, H, W)``.
    labels : torch.Tensor or None
        Integer labels of shape ``(B,)``; ``None`` means the attack must infer them (iDLG-style).
    gradients : dict of str to torch.Tensor
        Observed gradient of every parameter, keyed by ``model.named_parameters()`` names.
        Shape ``param.shape`` (summed over the batch), or ``(B, *param.shape)`` when
        ``per_sample`` is true.
    device : torch.device or str
        Where the attack runs.
    dtype : torch.dtype
        Floating-point type of the attack's arithmetic (closed-form attacks always use float64).
    batch_size : int
        Number of images behind the gradients.
    per_sample : bool
        True when ``gradients`` hold one gradient per image (independent batch-1 problems).
    fedavg : LocalSteps
        The client's local training: with more than one step ``gradients`` hold its update
        ``(w_0 - w_E) / (E lr)`` (:mod:`archscan.fedavg`), which only attacks that simulate the
        steps can match.
    """

    model: nn.Module
    input_shape: tuple
    labels: torch.Tensor | None
    gradients: dict
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float64
    batch_size: int = 1
    per_sample: bool = False
    fedavg: LocalSteps = LocalSteps()

    def __post_init__(self):
        # frozen: normalise fields through object.__setattr__ once, at construction
        object.__setattr__(self, "device", torch.device(self.device))
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))

    def problems(self) -> list[Target]:
        """Split into independent attack problems.

        Returns
        -------
        list of Target
            One batch-1 target per image when ``per_sample`` is true, else ``[self]``.
        """
        if not self.per_sample:
            return [self]
        out = []
        for b in range(self.batch_size):
            grads = {k: v[b] for k, v in self.gradients.items()}
            labels = None if self.labels is None else self.labels[b : b + 1]
            out.append(replace(self, gradients=grads, labels=labels, batch_size=1, per_sample=False))
        return out

    def stacked_gradients(self) -> dict:
        """Gradients with a leading problem dimension ``P`` (``B`` if per-sample, else 1)."""
        if self.per_sample:
            return dict(self.gradients)
        return {k: v.unsqueeze(0) for k, v in self.gradients.items()}


@dataclass
class Reconstruction:
    """Result of one attack run.

    Parameters
    ----------
    images : torch.Tensor or None
        Reconstructed images ``B x C x H x W`` clamped to ``[0, 1]``; None when skipped.
    attack : str
        Name of the attack.
    iterations : int
        Iterations spent (solver iterations for closed-form attacks, optimiser steps otherwise).
    seconds : float
        Wall-clock time of the attack.
    settings : dict
        Every setting the attack used (so a run can be repeated).
    skipped : str or None
        Why the attack did not run, or None.
    labels : torch.Tensor or None
        Labels the attack used (given or inferred).
    info : dict
        Attack-specific diagnostics (objective history, per-layer residuals, ...).
    """

    images: torch.Tensor | None
    attack: str
    iterations: int = 0
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)
    skipped: str | None = None
    labels: torch.Tensor | None = None
    info: dict = field(default_factory=dict)


class Attack(abc.ABC):
    """Abstract base class: subclasses set ``name`` and ``defaults`` and implement ``_run``."""

    name = "base"
    defaults: dict = {}

    def __init__(self, **settings):
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for attack {self.name!r}; "
                             f"choose from {sorted(self.defaults)}")
        self.settings = {**self.defaults, **settings}

    def applicable(self, model: nn.Module, input_shape: tuple | None = None) -> str | None:
        """Return None if the attack applies to ``model``, else the reason it is skipped."""
        return None

    def reconstruct(self, target: Target, seed: int = 0) -> Reconstruction:
        """Run the attack on ``target`` with the random seed ``seed``.

        Returns
        -------
        Reconstruction
            The images, or a skipped record with the reason.
        """
        reason = self.skip_reason(target)
        if reason is not None:
            return Reconstruction(None, self.name, settings=dict(self.settings), skipped=reason)
        start = time.perf_counter()
        images, iterations, labels, info = self._run(target, seed)
        if target.device.type == "cuda":  # kernels are asynchronous: time the finished work
            torch.cuda.synchronize(target.device)
        seconds = time.perf_counter() - start
        return Reconstruction(images.detach().clamp(0, 1), self.name, int(iterations), seconds,
                              {**self.settings, "seed": seed}, None, labels, info)

    def _batch_reason(self, target: Target) -> str | None:
        """Reason to skip a summed-gradient batch, if the attack cannot handle one."""
        return None

    # True for attacks that match a simulated update (they unroll the client's local steps)
    simulates_local_steps = False

    def skip_reason(self, target: Target) -> str | None:
        """Why this attack does not run on ``target`` (model, batch or local training), or None."""
        reason = self.applicable(target.model, target.input_shape) or self._batch_reason(target)
        if reason is None and target.fedavg.unrolled and not self.simulates_local_steps:
            reason = (f"{self.name} solves one gradient at the shared weights; the client shares the change of "
                      f"{target.fedavg.steps} local SGD steps")
        return reason

    def reconstruct_grid(self, target: Target, configs: list, seed: int = 0) -> list:
        """One :class:`Reconstruction` per configuration (settings overrides of this attack).

        This default runs them one after the other with the same seed; attacks that can batch
        configurations (Inverting Gradients) override it.
        """
        return [type(self)(**{**self.settings, **c}).reconstruct(target, seed=seed) for c in configs]

    @abc.abstractmethod
    def _run(self, target: Target, seed: int):
        """Return ``(images, iterations, labels, info)``; implemented by subclasses."""


# ---------------------------------------------------------------------------------------------
# helpers shared by the attacks


def observe_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      per_sample: bool = False, fedavg: LocalSteps | None = None) -> dict:
    """Gradients a client would share: d(sum of cross-entropy over the batch)/d(parameters).

    Parameters
    ----------
    model : nn.Module
        The model, in the mode (eval/train) the client trains in.
    images : torch.Tensor
        ``B x C x H x W`` batch, already on the model's device and dtype.
    labels : torch.Tensor
        Integer labels ``(B,)``.
    per_sample : bool
        If true return one gradient per image, stacked on a leading dimension (a loop, so every
        per-sample gradient is computed exactly as a batch-1 client would).
    fedavg : LocalSteps, optional
        The client's local training; with more than one step the update it shares
        (:func:`archscan.fedavg.client_update`) instead of the gradient.

    Returns
    -------
    dict of str to torch.Tensor
        Detached gradients keyed by parameter name.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    if per_sample:
        each = [observe_gradients(model, images[b : b + 1], labels[b : b + 1], fedavg=fedavg)
                for b in range(len(images))]
        return {n: torch.stack([e[n] for e in each]) for n in names}
    if fedavg is not None and fedavg.unrolled:
        return client_update(model, images, labels, fedavg)
    loss = F.cross_entropy(model(images), labels, reduction="sum")
    grads = torch.autograd.grad(loss, params, allow_unused=True)   # an unused parameter: a zero gradient
    return {n: (torch.zeros_like(p) if g is None else g).detach() for n, g, p in zip(names, grads, params)}


def make_target(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                reveal_labels: bool = True, per_sample: bool = False, device=None,
                dtype: torch.dtype = torch.float64, train: bool = False,
                fedavg: LocalSteps = LocalSteps()) -> Target:
    """Simulate a client: copy the model, compute its shared gradients, build a :class:`Target`.

    Parameters
    ----------
    model : nn.Module
        Architecture and weights (not modified: a copy is moved to ``device``/``dtype``).
    images, labels : torch.Tensor
        The private batch (images in ``[0, 1]``) and its integer labels.
    reveal_labels : bool
        If false the target carries ``labels=None`` and attacks must infer them.
    per_sample : bool
        Share one gradient per image instead of their sum.
    device, dtype
        Where and in which precision the client computes (float64 makes exact cases exact).
    train : bool
        Keep the model in train mode (BatchNorm uses batch statistics) instead of eval mode.
    fedavg : LocalSteps
        The client's local training (one step: the plain gradient).
    """
    device = torch.device(device or images.device)
    net = prepare_model(model, device, dtype).train(train)
    x = images.to(device=device, dtype=dtype)
    y = labels.to(device=device, dtype=torch.long)
    grads = observe_gradients(net, x, y, per_sample=per_sample, fedavg=fedavg)
    return Target(net, tuple(x.shape[1:]), y if reveal_labels else None, grads, device, dtype,
                  batch_size=len(x), per_sample=per_sample, fedavg=fedavg)


def prepare_model(model: nn.Module, device, dtype: torch.dtype) -> nn.Module:
    """Deep copy of ``model`` on ``device`` in ``dtype``, keeping its train/eval mode.

    A copy, so an attack never changes the caller's model (nor its autograd state).
    """
    net = copy.deepcopy(model).to(device=device, dtype=dtype)
    for p in net.parameters():
        p.grad = None
    return net


def gradients_as(target: Target, dtype: torch.dtype) -> dict:
    """Observed gradients moved to the target's device in ``dtype``."""
    return {k: v.to(device=target.device, dtype=dtype) for k, v in target.gradients.items()}


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on ``device`` so every random draw of an attack is reproducible."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute neighbour difference) of each image.

    Parameters
    ----------
    x : torch.Tensor
        ``... x C x H x W``.

    Returns
    -------
    torch.Tensor
        One value per image (shape ``x.shape[:-3]``).
    """
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(-3, -2, -1))
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(-3, -2, -1))
    return dh + dw


def cosine_distance(grads: list, observed: list) -> torch.Tensor:
    """``1 - <g, g*> / (|g| |g*|)`` over the concatenation of all parameter gradients.

    Both lists hold tensors with the same leading problem dimension; the result has one value per
    problem (Geiping et al. 2020 sum the dot products and norms over all parameters).
    """
    dot = sum((g * o).flatten(1).sum(1) for g, o in zip(grads, observed))
    gn = sum(g.pow(2).flatten(1).sum(1) for g in grads)
    on = sum(o.pow(2).flatten(1).sum(1) for o in observed)
    return 1 - dot / (gn.sqrt() * on.sqrt()).clamp_min(torch.finfo(dot.dtype).tiny)


def batched_gradient_fn(model: nn.Module, names: list, soft_labels: bool = False,
                        fedavg: LocalSteps | None = None):
    """Per-problem parameter gradients, vectorised with ``torch.func.vmap`` over ``grad``.

    Parameters
    ----------
    model : nn.Module
        Model evaluated functionally (its own parameters are not touched).
    names : list of str
        Parameters whose gradients are returned.
    soft_labels : bool
        If true labels are logits of a soft label distribution (DLG's dummy labels).
    fedavg : LocalSteps, optional
        The client's local training: with more than one step the simulated update (the steps
        unrolled, :func:`archscan.fedavg.unrolled`) instead of the gradient.

    Returns
    -------
    callable
        ``f(x, y) -> dict`` with ``x`` of shape ``P x m x C x H x W`` and ``y`` of shape ``P x m``
        (or ``P x m x K``); each of the P problems gets the gradient of the summed cross-entropy of
        its m images.  Differentiable w.r.t. ``x`` and ``y`` (the attacks backpropagate through it).
    """
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    buffers = dict(model.named_buffers())

    def loss(p, x, y):
        out = torch.func.functional_call(model, ({**fixed, **p}, buffers), (x,))
        if soft_labels:  # cross-entropy against a distribution, as DLG's dummy label
            return -(torch.softmax(y, -1) * torch.log_softmax(out, -1)).sum()
        return F.cross_entropy(out, y, reduction="sum")

    chosen = {n: p.detach() for n, p in model.named_parameters() if n in names}
    per_problem = torch.func.vmap(unrolled(torch.func.grad(loss), fedavg), in_dims=(None, 0, 0))
    return lambda x, y: per_problem(chosen, x, y)
