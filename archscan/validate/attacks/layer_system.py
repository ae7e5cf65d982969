"""One Conv2d/Linear layer of a chain as a linear system in its input, for K independent problems.

Every problem ``k`` (one image) has its own system ``U_k x_k = V_k``; they share the layer's weight
and differ in the output gradient ``g_k``, the known outputs and the observed weight gradient.
All K are stacked on a leading dimension and applied at once, matrix-free: a conv's forward rows
and weight-gradient rows both read the patches (``unfold``) of ``x``, so one ``unfold`` serves
both and one ``fold`` both adjoints, with batched matrix products in between.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from archscan.validate.attacks.steps import Step


def per_problem(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A ``(K,)`` tensor viewed to broadcast over ``(K, ...)`` tensors of ``ndim`` dimensions."""
    return t.view(-1, *([1] * (ndim - 1)))


def norms(t: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of every problem's slice of ``t`` (``(K, ...)`` -> ``(K,)``)."""
    return t.flatten(1).norm(dim=1)


class LayerSystem:
    """Stacked forward and gradient rows ``U_k x_k = V_k`` of one Conv2d/Linear layer, K problems.

    Parameters
    ----------
    step : Step
        The layer.
    z : torch.Tensor
        Its pre-activation outputs ``(K, *out_shape)`` (values where ``known``).
    known : torch.Tensor
        Bool mask of output entries whose value is known (False at inactive ReLU outputs).
    g : torch.Tensor
        ``dl/dz``, same shape as ``z``.
    dW : torch.Tensor
        Observed weight gradients ``(K, *weight.shape)``; ``weight.shape`` alone means one problem.

    Each block of each problem is divided by an estimate of its operator norm (``wf``, ``wg``:
    ``(K,)``) so both kinds of rows count alike.  Vectors in the row space are ``(K, rows)``.
    """

    def __init__(self, step: Step, z, known, g, dW):
        mod = step.module
        if dW.dim() == mod.weight.dim():  # a single problem's gradient
            dW = dW.unsqueeze(0)
        self.step, self.known, self.g = step, known.to(z.dtype), g
        self.z, self.dW, self._W = z, dW, mod.weight.detach()  # no autograd through the weight
        self.x_shape = (z.shape[0], *step.in_shape)
        if step.kind == "conv":
            self._setup_conv(mod)
        bias = 0 if mod.bias is None else self._bias_like(mod.bias)
        self.wf, self.wg = self._block_weights()
        self._fmask = per_problem(self.wf, z.dim()) * self.known   # weighted forward rows
        self._gw = per_problem(self.wg, g.dim()) * g                # weighted gradient rows
        if step.kind == "conv":
            self._gw = self._gw.reshape(self._gm.shape)
        self.rhs = (self._fmask * (z - bias), per_problem(self.wg, dW.dim()) * dW)

    def _bias_like(self, bias):
        """Bias broadcast to the output shape."""
        return bias.view(-1, 1, 1) if self.step.kind == "conv" else bias

    def _setup_conv(self, mod: nn.Conv2d):
        """Geometry: explicit pre-padding for string or non-zero padding modes, else built-in."""
        self.stride, self.dilation, self.groups = mod.stride, mod.dilation, mod.groups
        self.kernel = mod.kernel_size
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            amounts = mod._reversed_padding_repeated_twice
            mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
            self.pre = lambda x: F.pad(x, amounts, mode=mode)
            zero = torch.zeros(self.x_shape, dtype=self.g.dtype, device=self.g.device)
            padded, vjp = torch.func.vjp(self.pre, zero)  # F.pad is linear: one vjp serves all
            self.pre_t, self.pad_shape, self.padding = (lambda y: vjp(y)[0]), padded.shape, 0
        else:
            self.pre, self.pre_t = (lambda x: x), (lambda y: y)
            self.pad_shape, self.padding = self.x_shape, mod.padding
        K, G = self.x_shape[0], mod.groups
        self._w = self._W.reshape(G, mod.out_channels // G, -1)         # (G, Fg, Cg*kh*kw)
        self._gm = self.g.reshape(K, G, mod.out_channels // G, -1)      # (K, G, Fg, L)

    def _cols(self, x):
        """Patches of the (padded) input: ``(K, G, Cg*kh*kw, L)``."""
        cols = F.unfold(self.pre(x), self.kernel, self.dilation, self.padding, self.stride)
        return cols.view(x.shape[0], self.groups, -1, cols.shape[-1])

    def _fold(self, cols):
        """Adjoint of :meth:`_cols`."""
        cols = cols.reshape(cols.shape[0], -1, cols.shape[-1])
        return self.pre_t(F.fold(cols, tuple(self.pad_shape[-2:]), self.kernel, self.dilation,
                                 self.padding, self.stride))

    def _conv_out(self, cols):
        """Forward rows (no bias, no mask) from the patches."""
        return (self._w @ cols).view(cols.shape[0], *self.step.out_shape)

    def _conv_grad(self, cols):
        """Weight-gradient rows from the patches: ``g_k cols_k^T`` per problem and group."""
        return (self._gm @ cols.transpose(-1, -2)).view(cols.shape[0], *self._W.shape)

    def _conv_out_t(self, y):
        """Patches adjoint to the forward rows."""
        return self._w.transpose(-1, -2) @ y.reshape(self._gm.shape)

    def _conv_grad_t(self, v):
        """Patches adjoint to the weight-gradient rows."""
        K, G, Fg, _ = self._gm.shape
        return v.reshape(K, G, Fg, -1).transpose(-1, -2) @ self._gm

    def forward_rows(self, x):
        """``A x_k`` (no bias) on the known outputs of every problem."""
        if self.step.kind == "linear":
            return self.known * (x @ self._W.T)
        return self.known * self._conv_out(self._cols(x))

    def forward_rows_t(self, y, masked: bool = True):
        """Adjoint of :meth:`forward_rows`; ``masked=False`` gives the plain ``A^T y``."""
        y = self.known * y if masked else y
        if self.step.kind == "linear":
            return y @ self._W
        return self._fold(self._conv_out_t(y))

    def gradient_rows(self, x):
        """``dl/dW`` of every problem as a linear function of its input ``x_k`` (``g_k`` fixed)."""
        if self.step.kind == "linear":
            return self.g.unsqueeze(2) * x.unsqueeze(1)
        return self._conv_grad(self._cols(x))

    def gradient_rows_t(self, v):
        """Adjoint of :meth:`gradient_rows`."""
        if self.step.kind == "linear":
            return (self.g.unsqueeze(1) @ v).squeeze(1)
        return self._fold(self._conv_grad_t(v))

    def apply(self, x):
        """Weighted ``U_k x_k`` of every problem: ``(K, rows)``."""
        if self.step.kind == "linear":
            fwd = x @ self._W.T
            grad = self._gw.unsqueeze(2) * x.unsqueeze(1)
        else:
            cols = self._cols(x)  # one unfold for both blocks
            fwd, grad = self._conv_out(cols), self._gw @ cols.transpose(-1, -2)
        return torch.cat([(self._fmask * fwd).flatten(1), grad.flatten(1)], dim=1)

    def apply_t(self, r):
        """Weighted ``U_k^T r_k`` for ``r`` of shape ``(K, rows)``, shaped like ``x``."""
        nf = self._fmask[0].numel()
        rf, rg = self._fmask * r[:, :nf].view_as(self._fmask), r[:, nf:]
        if self.step.kind == "linear":
            rg = rg.view(*self._gw.shape, -1)
            return rf @ self._W + (self._gw.unsqueeze(1) @ rg).squeeze(1)
        K, G, Fg, L = self._gw.shape
        patches = self._conv_out_t(rf)  # + the gradient rows' part, in place: one large temporary
        rg = rg.reshape(K * G, Fg, -1).transpose(1, 2)
        patches.view(K * G, -1, L).baddbmm_(rg, self._gw.view(K * G, Fg, L))
        return self._fold(patches)  # one fold for both blocks

    def rhs_flat(self):
        """Weighted ``V_k`` of every problem: ``(K, rows)``."""
        return torch.cat([self.rhs[0].flatten(1), self.rhs[1].flatten(1)], dim=1)

    @torch.no_grad()
    def _block_weights(self, iters: int = 12):
        """Inverse operator 2-norms of every problem's forward and gradient blocks (power iteration).

        Every problem starts from the same seeded vector, the one it would get alone.
        """
        gen = torch.Generator(self.g.device).manual_seed(0)  # fixed: the solver is deterministic
        weights = []
        blocks = ((self.forward_rows, self.forward_rows_t), (self.gradient_rows, self.gradient_rows_t))
        for op, op_t in blocks:
            v = torch.randn((1, *self.x_shape[1:]), generator=gen, device=self.g.device,
                            dtype=self.g.dtype).expand(self.x_shape)
            norm = torch.zeros(self.x_shape[0], dtype=self.g.dtype, device=self.g.device)
            for _ in range(iters):
                w = op_t(op(v))
                norm = norms(w) / norms(v).clamp_min(1e-300)
                v = w / per_problem(norms(w).clamp_min(1e-300), w.dim())
            inverse = 1.0 / norm.clamp_min(1e-300).sqrt()
            weights.append(torch.where(norm > 0, inverse, torch.zeros_like(norm)))
        return tuple(weights)

    def take(self, index):
        """The system of the problems ``index`` (a slice or index tensor) alone."""
        return LayerSystem(self.step, self.z[index], self.known[index] > 0, self.g[index], self.dW[index])

    def group_parts(self):
        """Independent subsystems of a grouped conv: ``[(system, channel slice of x)]`` or None.

        Output channels of group ``k`` (their forward rows and their weight-gradient rows) read
        only the input channels of group ``k``, so the layer's system is block diagonal: each
        block is solved on its own (small enough for a dense solve where the whole is not).
        """
        mod = self.step.module
        if self.step.kind != "conv" or mod.groups == 1:
            return None
        G, (C, H, W) = mod.groups, self.step.in_shape
        cg, fg = C // G, mod.out_channels // G
        parts = []
        for k in range(G):
            out = slice(k * fg, (k + 1) * fg)
            step = Step("conv", f"{self.step.name}[group {k}]", _group_conv(mod, out, cg, fg),
                        in_shape=(cg, H, W), out_shape=(fg, *self.step.out_shape[1:]))
            known = self.known[:, out] > 0
            parts.append((LayerSystem(step, self.z[:, out], known, self.g[:, out], self.dW[:, out]),
                          slice(k * cg, (k + 1) * cg)))
        return parts

    @torch.no_grad()
    def matrix(self) -> torch.Tensor:
        """Explicit weighted ``U_k`` of every problem: ``(K, rows, unknowns)``.

        Built in place by scattering the weights and ``g_k`` (see :func:`_patch_index`), with no
        product by unit vectors: only for small layers and cross-checks.
        """
        K, n = self.x_shape[0], math.prod(self.x_shape[1:])
        nf, W = self._fmask[0].numel(), self._W
        U = torch.zeros(K, nf + math.prod(W.shape), n, dtype=self.g.dtype, device=self.g.device)
        if self.step.kind == "linear":
            U[:, :nf] = self._fmask.reshape(K, -1, 1) * W
            diagonal = U[:, nf:].view(K, *W.shape, n).diagonal(dim1=2, dim2=3)  # rows (f, j), column j
            diagonal.copy_(self._gw.unsqueeze(2).expand(-1, -1, n))
            return U
        idx = _patch_index(self)                                          # (G, Cg*kk, L), -1: padding
        G, Fg, L = self._gw.shape[1], self._gw.shape[2], idx.shape[-1]
        idx = idx.unsqueeze(1).expand(G, Fg, -1, L).reshape(G * Fg, -1, L)   # (F, Cg*kk, L)
        valid, idx = (idx >= 0).to(self.g.dtype), idx.clamp_min(0)          # padding adds zeros
        A = torch.zeros(G * Fg, L, n, dtype=self.g.dtype, device=self.g.device)
        src = self._w.reshape(G * Fg, -1, 1) * valid                        # W[f, q] where read
        A.scatter_add_(2, idx.transpose(1, 2), src.transpose(1, 2))
        U[:, :nf] = self._fmask.reshape(K, -1, 1) * A.view(1, nf, n)
        grad = self._gw.reshape(K, G * Fg, 1, L) * valid                     # g_k[f, l] where read
        U[:, nf:].view(K, G * Fg, -1, n).scatter_add_(3, idx.expand(K, -1, -1, -1), grad)
        return U

    @torch.no_grad()
    def residual(self, x) -> torch.Tensor:
        """Relative residual ``|U_k x_k - V_k| / |V_k|`` of every problem's candidate: ``(K,)``."""
        rhs = self.rhs_flat()
        return norms(self.apply(x) - rhs) / norms(rhs).clamp_min(1e-300)


def _group_conv(mod: nn.Conv2d, out: slice, cg: int, fg: int) -> nn.Conv2d:
    """The ungrouped conv of one group of ``mod`` (output channels ``out``)."""
    sub = nn.Conv2d(cg, fg, mod.kernel_size, mod.stride, mod.padding, mod.dilation, 1,
                    mod.bias is not None, mod.padding_mode, device=mod.weight.device,
                    dtype=mod.weight.dtype)
    with torch.no_grad():
        sub.weight.copy_(mod.weight[out])
        if mod.bias is not None:
            sub.bias.copy_(mod.bias[out])
    return sub


def _patch_index(system: LayerSystem) -> torch.Tensor:
    """Which input entry every patch entry reads: ``(G, Cg*kh*kw, L)``, -1 for zero padding.

    The patches of the image ``1, 2, ..., n`` (exact in float64): padding modes copy entries
    (reflect, replicate, circular) or insert zeros, so every patch entry is an index or 0.
    """
    n = math.prod(system.x_shape[1:])
    ids = torch.arange(1, n + 1, dtype=system.g.dtype, device=system.g.device)
    cols = F.unfold(system.pre(ids.view(1, *system.x_shape[1:])), system.kernel, system.dilation,
                    system.padding, system.stride)
    return cols.round().long().view(system.groups, -1, cols.shape[-1]) - 1
