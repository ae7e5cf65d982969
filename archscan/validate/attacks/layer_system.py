"""One Conv2d/Linear layer of a chain as a linear system in its input, applied matrix-free."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import grad as nn_grad

from archscan.validate.attacks.steps import Step


class LayerSystem:
    """Stacked forward and gradient rows ``U x = V`` of one Conv2d/Linear layer (batch one).

    Parameters
    ----------
    step : Step
        The layer.
    z : torch.Tensor
        Its pre-activation output ``(1, *out_shape)`` (values where ``known``).
    known : torch.Tensor
        Bool mask of output entries whose value is known (False at inactive ReLU outputs).
    g : torch.Tensor
        ``dl/dz``, same shape as ``z``.
    dW : torch.Tensor
        Observed weight gradient.

    Each block is divided by an estimate of its operator norm so both kinds of rows count alike.
    """

    def __init__(self, step: Step, z, known, g, dW):
        self.step, self.known, self.g = step, known.to(z.dtype), g
        self.z, self.dW = z, dW
        self.x_shape = (1, *step.in_shape)
        mod = step.module
        if step.kind == "conv":
            self._setup_conv(mod)
        bias = 0 if mod.bias is None else self._bias_like(mod.bias)
        self.wf = self.wg = 1.0
        self.wf, self.wg = self._block_weights()
        self.rhs = (self.wf * self.known * (z - bias), self.wg * dW)

    def _bias_like(self, bias):
        """Bias broadcast to the output shape."""
        return bias.view(-1, 1, 1) if self.step.kind == "conv" else bias

    def _setup_conv(self, mod: nn.Conv2d):
        """Geometry: explicit pre-padding for string or non-zero padding modes, else built-in."""
        self.stride, self.dilation, self.groups = mod.stride, mod.dilation, mod.groups
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

    def forward_rows(self, x):
        """``A x`` (no bias) on the known outputs."""
        mod = self.step.module
        if self.step.kind == "linear":
            out = x @ mod.weight.T
        else:
            out = F.conv2d(self.pre(x), mod.weight, None, self.stride, self.padding, self.dilation,
                           self.groups)
        return self.known * out

    def forward_rows_t(self, y, masked: bool = True):
        """Adjoint of :meth:`forward_rows`; ``masked=False`` gives the plain ``A^T y``."""
        mod, y = self.step.module, (self.known * y if masked else y)
        if self.step.kind == "linear":
            return y @ mod.weight
        return self.pre_t(nn_grad.conv2d_input(self.pad_shape, mod.weight, y, self.stride,
                                               self.padding, self.dilation, self.groups))

    def gradient_rows(self, x):
        """``dl/dW`` as a linear function of the layer input ``x`` (``g`` fixed)."""
        if self.step.kind == "linear":
            return self.g.T @ x
        return nn_grad.conv2d_weight(self.pre(x), self.step.module.weight.shape, self.g, self.stride,
                                     self.padding, self.dilation, self.groups)

    def gradient_rows_t(self, v):
        """Adjoint of :meth:`gradient_rows`: a transposed convolution of ``g`` with kernel ``v``."""
        if self.step.kind == "linear":
            return self.g @ v
        return self.pre_t(nn_grad.conv2d_input(self.pad_shape, v, self.g, self.stride,
                                               self.padding, self.dilation, self.groups))

    def apply(self, x):
        """Weighted ``U x`` as a flat vector."""
        return torch.cat([(self.wf * self.forward_rows(x)).flatten(),
                          (self.wg * self.gradient_rows(x)).flatten()])

    def apply_t(self, r):
        """Weighted ``U^T r`` for a flat ``r``, shaped like ``x``."""
        nf = self.rhs[0].numel()
        rf, rg = r[:nf].view_as(self.rhs[0]), r[nf:].view_as(self.rhs[1])
        return self.wf * self.forward_rows_t(rf) + self.wg * self.gradient_rows_t(rg)

    def rhs_flat(self):
        """Weighted ``V`` as a flat vector."""
        return torch.cat([self.rhs[0].flatten(), self.rhs[1].flatten()])

    @torch.no_grad()
    def _block_weights(self, iters: int = 12):
        """Inverse operator 2-norms of the forward and gradient blocks (power iteration)."""
        gen = torch.Generator(self.g.device).manual_seed(0)  # fixed: the solver is deterministic
        weights = []
        blocks = ((self.forward_rows, self.forward_rows_t), (self.gradient_rows, self.gradient_rows_t))
        for op, op_t in blocks:
            v = torch.randn(self.x_shape, generator=gen, device=self.g.device, dtype=self.g.dtype)
            norm = 0.0
            for _ in range(iters):
                w = op_t(op(v))
                norm = float(w.norm()) / max(float(v.norm()), 1e-300)
                v = w / max(float(w.norm()), 1e-300)
            weights.append(1.0 / math.sqrt(norm) if norm > 0 else 0.0)
        return tuple(weights)

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
        z, dW, parts = self.z, self.dW, []
        for k in range(G):
            out = slice(k * fg, (k + 1) * fg)
            sub = nn.Conv2d(cg, fg, mod.kernel_size, mod.stride, mod.padding, mod.dilation, 1,
                            mod.bias is not None, mod.padding_mode, device=mod.weight.device,
                            dtype=mod.weight.dtype)
            with torch.no_grad():
                sub.weight.copy_(mod.weight[out])
                if mod.bias is not None:
                    sub.bias.copy_(mod.bias[out])
            step = Step("conv", f"{self.step.name}[group {k}]", sub, in_shape=(cg, H, W),
                        out_shape=(fg, *self.step.out_shape[1:]))
            known = self.known[:, out] > 0
            parts.append((LayerSystem(step, z[:, out], known, self.g[:, out], dW[out]),
                          slice(k * cg, (k + 1) * cg)))
        return parts

    @torch.no_grad()
    def residual(self, x) -> float:
        """Relative residual ``|U x - V| / |V|`` of a candidate input."""
        rhs = self.rhs_flat()
        return float((self.apply(x) - rhs).norm() / rhs.norm().clamp_min(1e-300))

