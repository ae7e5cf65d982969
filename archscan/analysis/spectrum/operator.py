"""The operator A = JᵀJ, J = d(shared gradients)/d(image), applied matrix-free.

J q comes from forward-over-reverse differentiation (``torch.func.jvp`` of the gradient map) and
Jᵀu from the vector-Jacobian product of the gradient map, whose graph is built once per image and
reused for every product.  The operator holds one or several linearisation points (images): row
i of a product is taken at ``point_of_row[i]``, so every prior sample can be seen from its own
image (ReLU networks have a different J at every mask pattern).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vjp, vmap

from archscan.fedavg import LocalSteps, unrolled


def gradient_map(model: torch.nn.Module, label, device, fedavg: LocalSteps | None = None):
    """Flat shared-gradient map g(x) of a model, written for torch.func transforms.

    ``label``: one label, or one per image of a client's batch.  The loss is the cross-entropy
    summed over the batch (the attacks' convention; for one image it is the plain loss).
    ``fedavg``: with more than one local step, g(x) is the client's update after those steps
    (:func:`archscan.fedavg.unrolled`), differentiated through every step.

    Returns
    -------
    g : callable
        ``g(x)`` for x of shape (B, C, H, W) -> (P,) concatenated gradients of the parameters that
        require grad (frozen parameters are not shared, so they are constants here).
    n_params : int
        P.
    """
    named = dict(model.named_parameters())
    params = {k: p.detach() for k, p in named.items() if p.requires_grad}
    consts = {k: p.detach() for k, p in named.items() if not p.requires_grad}
    consts.update({k: b.detach() for k, b in model.named_buffers()})
    y = torch.tensor([int(v) for v in np.atleast_1d(label)], device=device)

    def loss(p, x):
        return F.cross_entropy(functional_call(model, (p, consts), (x,)), y, reduction="sum")

    shared = unrolled(grad(loss), fedavg)

    def g(x):
        return torch.cat([d.reshape(-1) for d in shared(params, x).values()])
    return g, sum(p.numel() for p in params.values())


def as_tensor(a, dtype, device) -> torch.Tensor:
    """Detached copy of an array or tensor in ``dtype`` on ``device``."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(device=device, dtype=dtype).clone()
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


class _Point:
    """One linearisation point: the client's batch (B images), their labels, the gradient map
    and the cached vjp.  ``label`` is an int for B = 1, a tuple for a batch."""

    def __init__(self, net, x: torch.Tensor, label, device, fedavg: LocalSteps | None = None):
        self.x = x
        self.label = int(label) if np.ndim(label) == 0 else tuple(int(v) for v in label)
        self.g, self.n_params = gradient_map(net, self.label, device, fedavg)
        self.g_out, self.g_vjp = vjp(self.g, x)   # built once: every Jᵀu is one backward through it
        self.grad_sq_norm = float((self.g_out.double() ** 2).sum())


class GramOperator:
    """Matrix-free A = JᵀJ at one or several images.

    Products run in ``dtype`` on ``device``; inputs and outputs are float64 (the Lanczos vectors
    stay in float64, so only the model arithmetic is rounded to ``dtype``).

    Parameters
    ----------
    model : torch.nn.Module
        Deep-copied, cast to ``dtype`` and put in eval mode (the caller's model is not touched).
    images : array or tensor
        One image (C, H, W) or several (k*B, C, H, W): the linearisation points, B consecutive
        images each.
    labels : int, sequence of int or None
        Loss label per image; None uses the model's prediction (what iDLG infers).
    batch : int
        Images per point (a client's batch, whose gradients are summed): the unknown of a point is
        its whole batch, n = B*C*H*W, and a product's vector holds B stacked images.
    dtype, device
        Arithmetic of the products.
    mode : {"auto", "jvp", "double-vjp"}
        How J q is formed: forward-over-reverse (fast) or the double-vjp trick (a vjp of the linear
        map u -> Jᵀu; slower, needs no forward-mode formulas).  "auto" falls back on the first failure.
    fedavg : LocalSteps, optional
        The client's local training: J is then the Jacobian of its update after those steps.
    """

    def __init__(self, model, images, labels=None, dtype=torch.float32, device="cpu", mode="auto", batch: int = 1,
                 fedavg: LocalSteps | None = None):
        self.dtype, self.device, self.mode, self.batch = dtype, torch.device(device), mode, int(batch)
        self.fedavg = fedavg
        self.net = copy.deepcopy(model).to(device=self.device, dtype=dtype).eval()
        X = as_tensor(images, dtype, self.device)
        X = X[None] if X.dim() == 3 else X
        if len(X) % self.batch:
            raise ValueError(f"{len(X)} images do not split into batches of {self.batch}")
        self.shape, self.n = tuple(X.shape[1:]), X[0].numel() * self.batch
        labels = self._labels(X, labels)
        B = self.batch
        self.points = [_Point(self.net, X[i : i + B], labels[i] if B == 1 else labels[i : i + B], self.device,
                              fedavg) for i in range(0, len(X), B)]
        self.n_params = self.points[0].n_params
        self.products, self.notes = 0, []

    def _labels(self, X, labels) -> list[int]:
        if labels is None:
            with torch.no_grad():
                return [int(c) for c in self.net(X).argmax(-1)]
        return [int(labels)] * len(X) if np.ndim(labels) == 0 else [int(v) for v in labels]

    def _jv(self, pt: _Point, v: torch.Tensor) -> torch.Tensor:
        if self.mode == "double-vjp":
            # u -> Jᵀu is linear, so its vjp with cotangent v is (Jᵀ)ᵀ v = J v (at any u)
            _, back = vjp(lambda u: pt.g_vjp(u)[0], torch.zeros_like(pt.g_out))
            return back(v)[0]
        return jvp(pt.g, (pt.x,), (v,))[1]

    def _single(self, pt: _Point, v: torch.Tensor) -> torch.Tensor:
        return pt.g_vjp(self._jv(pt, v))[0]

    def _fresh(self, x: torch.Tensor, v: torch.Tensor, label: int) -> torch.Tensor:
        """A v at x without a cached graph (vmapped over points of one label)."""
        g, _ = gradient_map(self.net, label, self.device, self.fedavg)
        _, back = vjp(g, x)
        return back(jvp(g, (x,), (v,))[1])[0]

    def _apply(self, X: torch.Tensor, points: list, batched: bool) -> torch.Tensor:
        if self.batch > 1:               # a point is a whole batch already: one product at a time
            return torch.stack([self._single(p, x) for p, x in zip(points, X)])
        if batched and len(X) > 1 and len({id(p) for p in points}) == 1:
            return vmap(lambda v: self._single(points[0], v))(X)
        if batched and len(X) > 1 and self.mode != "double-vjp" and len({p.label for p in points}) == 1:
            xs = torch.cat([p.x for p in points])[:, None]
            return vmap(lambda x, v: self._fresh(x, v, points[0].label))(xs, X)
        return torch.stack([self._single(p, x) for p, x in zip(points, X)])

    def __call__(self, V: torch.Tensor, point_rows=None, batched: bool = False) -> torch.Tensor:
        """A V for the rows of V ((b, n)); row r at point ``point_rows[r]`` (default 0); float64 out."""
        X = V.to(device=self.device, dtype=self.dtype).reshape(len(V), self.batch, *self.shape)
        points = [self.points[i] for i in (np.zeros(len(V), int) if point_rows is None else point_rows)]
        with _NoTF32():
            Y = self._guarded_apply(X, points, batched)
        self.products += len(X)
        return Y.reshape(len(X), -1).to(torch.float64)

    def _guarded_apply(self, X, points, batched) -> torch.Tensor:
        """_apply, switching "auto" mode to the double-vjp product if jvp is not supported."""
        try:
            Y = self._apply(X, points, batched)
        except (RuntimeError, NotImplementedError) as err:
            if self.mode != "auto":
                raise
            self.mode = "double-vjp"
            self.notes.append(f"jvp failed ({type(err).__name__}: {str(err)[:120]}); using the double-vjp product")
            Y = self._apply(X, points, False)
        if self.mode == "auto":
            self.mode = "jvp"
        return Y


class _NoTF32:
    """TF32 off on CUDA while products run: its 10-bit mantissa (eps ~ 1e-3) would put the rounding
    floor of A above t = tau² lambda_max for every tau below ~0.03."""

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved
