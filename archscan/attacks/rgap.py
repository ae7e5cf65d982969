"""R-GAP: recursive closed-form gradient attack (Zhu & Blaschko 2021), with R-CONV's ReLU rule.

The model must be a chain ``x -> A_1 -> sigma_1 -> ... -> A_d (Linear head)`` of Conv2d / Linear
layers, element-wise activations and reshapes (traced with ``torch.fx``).  From the top:

1. the head's input and its output gradient ``g`` come from the Linear-with-bias identity
   ``x = dW[j]/db[j]``, ``g = db`` (or, without a bias, from the rank-one ``dW = g x^T`` plus the
   label and a 1-D search for the scale);
2. below every activation ``z = sigma^-1(y)`` and ``g_z = sigma'(z) * g_y``; ReLU outputs that are
   zero give no value but a zero gradient (R-CONV);
3. at every Conv2d / Linear, the input ``x`` solves in the least-squares sense the stacked system

   * forward rows   ``A x = z - b``           (only where ``z`` is known),
   * gradient rows  ``dl/dW(x; g_z) = dW_observed``  (a linear map of ``x`` once ``g_z`` is known),

   and the gradient moves down as ``g_x = A^T g_z``.

The operators are applied matrix-free (``conv2d``, ``conv2d_input``, ``conv2d_weight``) and the
system is solved with LSQR from zero, i.e. the minimum-norm least-squares solution, written in
torch so it runs on any device.  Everything runs in float64 (float32 costs ~50 dB on exact cases).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import grad as nn_grad

from .analytic import head_labels, infer_labels, linear_input, param_key
from .base import Attack, Target, gradients_as, prepare_model

_RESHAPE_FNS = {"flatten", "reshape", "view", "contiguous", "unflatten", "squeeze", "unsqueeze"}
_ACT_FNS = {"relu": "relu", "relu_": "relu", "leaky_relu": "leaky", "tanh": "tanh",
            "sigmoid": "sigmoid", "softplus": "softplus", "elu": "elu", "identity": "identity"}
_BRANCH_FNS = {operator.add: "residual add", torch.add: "residual add", torch.cat: "concatenation",
               operator.mul: "multiplicative branch", torch.stack: "concatenation"}
_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool1d,
            nn.AvgPool1d, nn.LPPool2d)
_EPS = 1e-12  # keeps inverses of saturating activations finite on imperfect values


# ---------------------------------------------------------------------------------------------
# the chain


@dataclass
class Step:
    """One operation of a chain model.

    ``kind`` is ``"linear"``, ``"conv"``, ``"act"`` (element-wise, named by ``act`` with numeric
    ``params``) or ``"reshape"``; shapes exclude the batch dimension.
    """

    kind: str
    name: str = ""
    module: nn.Module | None = None
    act: str = "identity"
    params: tuple = ()
    node: object = None
    in_shape: tuple = ()
    out_shape: tuple = ()


@dataclass
class Chain:
    """A traced chain model: its steps and the index of the Linear head."""

    steps: list
    head: int
    input_shape: tuple


def _module_step(name: str, mod: nn.Module):
    """Classify a submodule call: a :class:`Step`, or the reason the chain cannot use it."""
    if isinstance(mod, nn.Linear):
        return Step("linear", name, mod)
    if isinstance(mod, nn.Conv2d):
        return Step("conv", name, mod)
    simple = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Identity: "identity"}
    for cls, act in simple.items():
        if type(mod) is cls:
            return Step("act", name, mod, act)
    if isinstance(mod, nn.LeakyReLU):
        return Step("act", name, mod, "leaky", (float(mod.negative_slope),))
    if isinstance(mod, nn.Softplus):
        return Step("act", name, mod, "softplus", (float(mod.beta), float(mod.threshold)))
    if isinstance(mod, nn.ELU):
        return Step("act", name, mod, "elu", (float(mod.alpha),))
    if isinstance(mod, (nn.Flatten, nn.Unflatten)):
        return Step("reshape", name, mod)
    return _special_module_step(name, mod)


def _special_module_step(name: str, mod: nn.Module):
    """Modules that are identities or affine maps in eval mode, or known chain breakers."""
    if isinstance(mod, nn.modules.dropout._DropoutNd):
        return Step("act", name, mod, "identity") if not mod.training else f"dropout {name} in train mode"
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if mod.training or mod.running_mean is None:
            return f"BatchNorm {name} in train mode (batch statistics are unknowns)"
        return Step("act", name, mod, "affine")
    if isinstance(mod, _POOLING):
        return f"pooling {name} ({type(mod).__name__}) breaks the element-wise chain"
    if isinstance(mod, nn.ReLU6) or type(mod).__name__ in {"GELU", "SiLU", "Mish", "Hardswish"}:
        return f"activation {name} ({type(mod).__name__}) is not invertible from its output"
    return f"unsupported layer {name} ({type(mod).__name__})"


def _arg(node, index: int, key: str, default):
    """Positional-or-keyword argument of a traced call."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(key, default)


def _function_step(node):
    """Classify a traced function or method call: a :class:`Step` or a reason."""
    target = node.target
    if target in _BRANCH_FNS:
        return f"{_BRANCH_FNS[target]} at {node.name}: not a chain"
    fname = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    if fname in _RESHAPE_FNS:
        return Step("reshape", node.name)
    act = _ACT_FNS.get(fname)
    if act == "leaky":
        return Step("act", node.name, None, act, (float(_arg(node, 1, "negative_slope", 0.01)),))
    if act == "softplus":
        return Step("act", node.name, None, act, (float(_arg(node, 1, "beta", 1.0)),
                                                  float(_arg(node, 2, "threshold", 20.0))))
    if act == "elu":
        return Step("act", node.name, None, act, (float(_arg(node, 1, "alpha", 1.0)),))
    if act is not None:
        return Step("act", node.name, None, act)
    return f"unsupported operation {fname} at {node.name}"


def _is_shape_query(node, shape_nodes: set) -> bool:
    """True for nodes that only compute sizes (``x.size(0)``, ``x.shape[1]``), not tensors."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr:
        return True
    inputs = node.all_input_nodes
    return bool(inputs) and all(n in shape_nodes for n in inputs) and node.op != "output"


def trace_chain(model: nn.Module):
    """Trace ``model`` with ``torch.fx`` into a list of :class:`Step`, or return why it is no chain.

    Every tensor node must consume exactly the previous tensor node and feed exactly one tensor
    node; size queries (``x.view(x.size(0), -1)``) are allowed on the side.
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "not a static chain"
        return f"not traceable by torch.fx ({type(exc).__name__})"
    steps, current, shape_nodes = [], None, set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                return "more than one input"
            current = node
            continue
        if _is_shape_query(node, shape_nodes):
            shape_nodes.add(node)
            continue
        if node.op == "output":
            return (gm, steps) if node.args[0] is current else "the output is not the end of the chain"
        reason = _chain_link_reason(node, current, shape_nodes)
        step = reason or (_module_step(node.target, gm.get_submodule(node.target))
                          if node.op == "call_module" else _function_step(node))
        if isinstance(step, str):
            return step
        step.node, current = node, node
        steps.append(step)
    return "no output node"


def _chain_link_reason(node, current, shape_nodes: set) -> str | None:
    """Why ``node`` does not continue the chain from ``current`` (None if it does)."""
    if node.op == "get_attr":
        return f"{node.name} uses a parameter outside a layer"
    tensors = [n for n in node.all_input_nodes if n not in shape_nodes]
    users = [u for u in current.users if not _is_shape_query(u, shape_nodes)]
    if node.target in _BRANCH_FNS:
        return f"{_BRANCH_FNS[node.target]} at {node.name}: not a chain"
    if tensors != [current] or len(users) > 1:
        return f"branch at {node.name} (residual, concatenation or multiple inputs): not a chain"
    return None


def build_chain(model: nn.Module, input_shape: tuple):
    """Trace, attach shapes and check the chain reproduces ``model`` on a probe image.

    Returns
    -------
    Chain or str
        The chain, or the reason R-GAP cannot attack this model.
    """
    traced = trace_chain(model)
    if isinstance(traced, str):
        return traced
    gm, steps = traced
    ref = next(model.parameters())
    probe = torch.rand((1, *input_shape), generator=torch.Generator(ref.device).manual_seed(7),
                       device=ref.device, dtype=ref.dtype)
    torch.fx.passes.shape_prop.ShapeProp(gm).propagate(probe)
    shape = tuple(input_shape)
    for step in steps:
        step.in_shape, step.out_shape = shape, tuple(step.node.meta["tensor_meta"].shape[1:])
        shape = step.out_shape
    return _check_chain(Chain(steps, -1, tuple(input_shape)), model, probe)


def _check_chain(chain: Chain, model: nn.Module, probe: torch.Tensor):
    """Locate the head and verify the chain's own forward equals the model's."""
    params = [i for i, s in enumerate(chain.steps) if s.kind in ("linear", "conv")]
    if not params or chain.steps[params[-1]].kind != "linear":
        return "the last layer with parameters is not a Linear classifier head"
    chain.head = params[-1]
    after = chain.steps[chain.head + 1 :]
    if any(s.kind == "act" and s.act != "identity" for s in after):
        return "an activation follows the Linear head (logits must be the head's output)"
    if len(chain.steps[chain.head].in_shape) != 1:
        return "the Linear head must read a flat feature vector"
    with torch.no_grad():
        same = torch.allclose(run_steps(chain.steps, probe), model(probe), rtol=1e-6, atol=1e-9)
    return chain if same else "internal error: traced chain does not reproduce the model"


# ---------------------------------------------------------------------------------------------
# element-wise steps: forward, inverse and derivative from the output


def _affine(step: Step, ref: torch.Tensor):
    """Scale and shift of an eval-mode BatchNorm, shaped to broadcast over ``step.in_shape``."""
    bn = step.module
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
    view = (-1,) + (1,) * (len(step.in_shape) - 1)
    return scale.to(ref).view(view), shift.to(ref).view(view)


def act_forward(step: Step, u: torch.Tensor) -> torch.Tensor:
    """Apply the element-wise step to ``u``."""
    a = step.act
    if a == "affine":
        scale, shift = _affine(step, u)
        return u * scale + shift
    table = {
        "identity": lambda: u, "relu": lambda: F.relu(u), "tanh": lambda: torch.tanh(u),
        "sigmoid": lambda: torch.sigmoid(u),
        "leaky": lambda: F.leaky_relu(u, step.params[0] if step.params else 0.01),
        "softplus": lambda: F.softplus(u, *step.params), "elu": lambda: F.elu(u, *step.params),
    }
    return table[a]()


def act_inverse(step: Step, y: torch.Tensor):
    """Pre-activation from the output: ``(u, known)`` with ``known`` False where not invertible.

    Values outside the activation's range (possible when the layer above was not recovered
    exactly) are clipped into it first, so the result stays finite.
    """
    a, p, ones = step.act, step.params, torch.ones_like(y, dtype=torch.bool)
    if a == "identity":
        return y, ones
    if a == "affine":
        scale, shift = _affine(step, y)
        return (y - shift) / scale, ones
    if a == "relu":
        return y.clamp_min(0), y > 0
    if a == "leaky":
        return torch.where(y >= 0, y, y / p[0]), ones
    if a == "tanh":
        return torch.atanh(y.clamp(-1 + _EPS, 1 - _EPS)), ones
    if a == "sigmoid":
        return torch.logit(y.clamp(_EPS, 1 - _EPS)), ones
    if a == "softplus":
        beta, threshold = p
        yc = y.clamp_min(_EPS)
        return torch.where(beta * yc > threshold, yc, torch.log(torch.expm1(beta * yc)) / beta), ones
    alpha = p[0]  # elu
    return torch.where(y >= 0, y, torch.log1p(y.clamp_min(-alpha * (1 - _EPS)) / alpha)), ones


def act_slope(step: Step, y: torch.Tensor) -> torch.Tensor:
    """Derivative ``sigma'(u)`` expressed through the output ``y = sigma(u)``."""
    a, p = step.act, step.params
    if a == "identity":
        return torch.ones_like(y)
    if a == "affine":
        return _affine(step, y)[0].expand_as(y)
    if a == "relu":
        return (y > 0).to(y.dtype)
    if a == "leaky":
        return torch.where(y >= 0, torch.ones_like(y), torch.full_like(y, p[0]))
    if a == "tanh":
        return 1 - y.clamp(-1, 1) ** 2
    if a == "sigmoid":
        yc = y.clamp(0, 1)
        return yc * (1 - yc)
    if a == "softplus":
        beta, threshold = p
        return torch.where(beta * y > threshold, torch.ones_like(y), -torch.expm1(-beta * y.clamp_min(0)))
    return torch.where(y >= 0, torch.ones_like(y), y + p[0])  # elu


def run_steps(steps: list, x: torch.Tensor) -> torch.Tensor:
    """Forward a batch through ``steps`` (the chain's own interpretation of the model)."""
    for step in steps:
        if step.kind in ("linear", "conv"):
            x = step.module(x)
        elif step.kind == "reshape":
            x = x.reshape(x.shape[0], *step.out_shape)
        else:
            x = act_forward(step, x)
    return x


# ---------------------------------------------------------------------------------------------
# one layer as a linear system, matrix-free


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

    @torch.no_grad()
    def residual(self, x) -> float:
        """Relative residual ``|U x - V| / |V|`` of a candidate input."""
        rhs = self.rhs_flat()
        return float((self.apply(x) - rhs).norm() / rhs.norm().clamp_min(1e-300))


# ---------------------------------------------------------------------------------------------
# solvers


def lsqr(apply, apply_t, b: torch.Tensor, x0: torch.Tensor, max_iter: int = 5000,
         atol: float = 1e-14, btol: float = 1e-14):
    """LSQR (Paige & Saunders 1982) for ``min |U x - b|``, matrix-free, on any torch device.

    Parameters
    ----------
    apply, apply_t : callable
        ``U x`` (flat result) and ``U^T r`` (shaped like ``x0``).
    b : torch.Tensor
        Flat right-hand side.
    x0 : torch.Tensor
        Starting point; from zero LSQR converges to the minimum-norm least-squares solution.
    max_iter : int
        Iteration cap.
    atol, btol : float
        Stopping tolerances of the original algorithm (consistent and least-squares tests).

    Returns
    -------
    tuple
        ``(x, iterations)``.
    """
    x = x0.clone()
    u = b - apply(x)
    beta = float(u.norm())
    if beta == 0:
        return x, 0
    u = u / beta
    v = apply_t(u)
    alpha = float(v.norm())
    if alpha == 0:
        return x, 0
    v, w = v / alpha, v / alpha
    phibar, rhobar, anorm, bnorm = beta, alpha, 0.0, beta
    for it in range(1, max_iter + 1):
        u = apply(v) - alpha * u
        beta = float(u.norm())
        u = u / beta if beta > 0 else u
        v = apply_t(u) - beta * v
        alpha = float(v.norm())
        v = v / alpha if alpha > 0 else v
        anorm = math.sqrt(anorm ** 2 + alpha ** 2 + beta ** 2)
        rho = math.hypot(rhobar, beta)
        c, s = rhobar / rho, beta / rho
        theta, rhobar, phi, phibar = s * alpha, -c * alpha, c * phibar, s * phibar
        x = x + (phi / rho) * w
        w = v - (theta / rho) * w
        arnorm = alpha * abs(c) * phibar  # |U^T r|, for the least-squares test
        if _lsqr_done(phibar, arnorm, anorm, bnorm, float(x.norm()), atol, btol, alpha, beta):
            return x, it
    return x, max_iter


def _lsqr_done(rnorm, arnorm, anorm, bnorm, xnorm, atol, btol, alpha, beta) -> bool:
    """LSQR stopping tests: consistent system solved, least-squares optimum reached, or breakdown."""
    if alpha == 0 or beta == 0:  # Krylov space exhausted: the current iterate is exact
        return True
    if rnorm <= btol * bnorm + atol * anorm * xnorm:
        return True
    return arnorm <= atol * anorm * rnorm


def dense_matrix(system: LayerSystem) -> torch.Tensor:
    """Explicit ``U`` (rows x unknowns), column by column: only for small layers / cross-checks."""
    n = math.prod(system.x_shape)
    eye = torch.eye(n, dtype=system.g.dtype, device=system.g.device)
    return torch.stack([system.apply(eye[i].view(system.x_shape)) for i in range(n)], dim=1)


def dense_solve(system: LayerSystem, x0: torch.Tensor) -> torch.Tensor:
    """Least-squares solution closest to ``x0``, with an explicit matrix (SVD-based)."""
    U, V = dense_matrix(system), system.rhs_flat() - system.apply(x0)
    if U.device.type == "cpu":
        sol = torch.linalg.lstsq(U, V.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    else:  # CUDA's lstsq has no rank-revealing driver; the pseudo-inverse is
        sol = torch.linalg.pinv(U) @ V
    return x0 + sol.view(system.x_shape)


# ---------------------------------------------------------------------------------------------
# the recursion


@dataclass
class State:
    """Value ``x`` at one point of the chain, ``g = dl/dx`` and which entries of ``x`` are known."""

    x: torch.Tensor
    g: torch.Tensor
    known: torch.Tensor


def rank_one_head(W: torch.Tensor, dW: torch.Tensor, label: int, grid: int = 2001):
    """Input and output gradient of a bias-free Linear head from ``dW = g x^T`` and the label.

    ``dW = s u v^T`` gives ``x = t v`` and ``g = (s/t) u`` for an unknown scalar ``t``.  With
    cross-entropy ``g = softmax(t W v) - e_y``, so ``t`` is a root of
    ``f(t) = t u^T (softmax(t W v) - e_y) - s``: bracket the roots on a log grid over both signs,
    bisect every bracket, keep the root whose ``g`` matches best.

    Returns
    -------
    tuple
        ``(x, g)`` as 1-D tensors.
    """
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    u, s, v = U[:, 0], S[0], Vh[0]
    zv, onehot = W @ v, F.one_hot(torch.tensor(label), W.shape[0]).to(W)

    def root_fn(t):
        return t * ((torch.softmax(t[:, None] * zv, -1) - onehot) @ u) - s

    mags = torch.logspace(-8, 8, grid, dtype=W.dtype, device=W.device)
    t = torch.cat([-mags.flip(0), mags])
    f = root_fn(t)
    lo = torch.nonzero((f[:-1] * f[1:]) <= 0).flatten()
    if len(lo) == 0:
        raise ValueError("rank-one head: no scale reproduces the observed gradient")
    a, b = t[lo], t[lo + 1]
    for _ in range(200):  # bisection to machine precision, all brackets at once
        mid = (a + b) / 2
        left = root_fn(a) * root_fn(mid) <= 0
        a, b = torch.where(left, a, mid), torch.where(left, mid, b)
    roots = (a + b) / 2
    misfit = (torch.softmax(roots[:, None] * zv, -1) - onehot - (s / roots)[:, None] * u).norm(dim=1)
    best = roots[misfit.argmin()]
    return best * v, (s / best) * u


def top_state(chain: Chain, grads: dict, label: int | None) -> State:
    """State at the head's input: from the bias trick, or rank one plus the label without bias."""
    head = chain.steps[chain.head]
    W = head.module.weight
    dW = grads[param_key(head.name, "weight")]
    db = grads.get(param_key(head.name, "bias")) if head.module.bias is not None else None
    if db is not None:
        x, g = linear_input(dW, db), db
    else:
        label = int(infer_labels(dW)[0]) if label is None else label
        x, g = rank_one_head(W, dW, label)
    ones = torch.ones((1, *head.in_shape), dtype=torch.bool, device=W.device)
    return State(x.view(1, -1), (g @ W).view(1, -1), ones)


def descend_elementwise(step: Step, state: State, relu_tol: float = 1e-9) -> State:
    """Move the state from the output of a reshape/activation step to its input.

    ReLU outputs within ``relu_tol * max|x|`` of zero count as inactive: a recovered value of
    1e-13 is a zero output with rounding error, and calling it active would corrupt ``g``.
    """
    if step.kind == "reshape":
        shape = (1, *step.in_shape)
        return State(state.x.reshape(shape), state.g.reshape(shape), state.known.reshape(shape))
    y = state.x
    if step.act == "relu":
        y = torch.where(y > relu_tol * y.abs().max(), y, torch.zeros_like(y))
    u, known = act_inverse(step, y)
    g = act_slope(step, y) * state.g
    known = known & state.known
    return State(torch.where(known, u, torch.zeros_like(u)), g, known)


def solve_layer(system: LayerSystem, settings: dict, x0: torch.Tensor | None = None):
    """Least-squares input of one layer: ``(x, iterations)`` with the chosen solver."""
    if x0 is None:
        x0 = torch.zeros(system.x_shape, dtype=system.g.dtype, device=system.g.device)
    if settings["solver"] == "dense":
        return dense_solve(system, x0), 0
    return lsqr(system.apply, system.apply_t, system.rhs_flat(), x0, settings["max_iter"],
                settings["tol"], settings["tol"])


def _linear_start(system: LayerSystem, dW: torch.Tensor):
    """Closed-form start for a Linear layer: ``x = g^T dW / |g|^2`` (exact for batch one)."""
    if system.step.kind != "linear" or float(system.g.norm()) == 0:
        return None
    return (system.g @ dW) / system.g.pow(2).sum()


def descend_layer(step: Step, state: State, grads: dict, settings: dict, refine=None, start=None):
    """Solve a Conv2d/Linear layer for its input; return the new state and diagnostics.

    ``start`` (a number) is where the least-squares solve starts, so the solution is the one
    closest to it (the image layer uses ``settings["image_start"]``); ``refine(step, system, x)``
    (the hybrid attack) may improve the least-squares solution.
    """
    dW = grads[param_key(step.name, "weight")]
    system = LayerSystem(step, state.x, state.known, state.g, dW)
    x0 = _linear_start(system, dW)
    if x0 is None and start is not None:
        x0 = torch.full(system.x_shape, float(start), dtype=system.g.dtype, device=system.g.device)
    x, iters = solve_layer(system, settings, x0)
    info = {"layer": step.name, "kind": step.kind, "unknowns": math.prod(step.in_shape),
            "solver_iterations": iters, "residual": system.residual(x),
            "bias_check": _bias_check(step, state.g, grads)}
    if refine is not None:
        x, extra = refine(step, system, x)
        info.update(extra)
    g = system.forward_rows_t(state.g, masked=False)  # A^T g over all outputs
    ones = torch.ones_like(x, dtype=torch.bool)
    return State(x, g, ones), info


def _bias_check(step: Step, g: torch.Tensor, grads: dict):
    """Relative mismatch between the observed bias gradient and the one implied by ``g``."""
    db = grads.get(param_key(step.name, "bias"))
    if db is None or step.module.bias is None:
        return None
    implied = g.sum(dim=(0, 2, 3)) if step.kind == "conv" else g.sum(0)
    return float((implied - db).norm() / db.norm().clamp_min(1e-300))


def rgap_recursion(chain: Chain, grads: dict, label: int | None, settings: dict, refine=None):
    """Run the whole recursion for one image.

    Returns
    -------
    tuple
        ``(image (1, C, H, W), total solver iterations, per-layer diagnostics)``.
    """
    with torch.no_grad():  # closed form: no autograd graph (the hybrid re-enables it to refine)
        return _recursion(chain, grads, label, settings, refine)


def _recursion(chain: Chain, grads: dict, label: int | None, settings: dict, refine=None):
    """Body of :func:`rgap_recursion`."""
    state, layers, iterations = top_state(chain, grads, label), [], 0
    for index in reversed(range(chain.head)):
        step = chain.steps[index]
        if step.kind in ("linear", "conv"):
            on_image = all(s.kind == "reshape" for s in chain.steps[:index])
            start = settings["image_start"] if on_image else None
            state, info = descend_layer(step, state, grads, settings, refine, start)
            layers.append(info)
            iterations += info["solver_iterations"] + info.get("refine_iterations", 0)
        else:
            state = descend_elementwise(step, state, settings["relu_tol"])
    return state.x.reshape(1, *chain.input_shape), iterations, layers


class RGAPAttack(Attack):
    """R-GAP on chain models (Conv2d/Linear + invertible activations or ReLU, Linear head).

    Settings: ``solver`` (``"lsqr"`` matrix-free, or ``"dense"`` explicit SVD least squares for
    small layers / cross-checks), ``max_iter`` and ``tol`` (LSQR), ``relu_tol`` (relative level
    below which a recovered ReLU output counts as zero), ``image_start`` (the image-layer solution
    is the least-squares solution closest to this constant image: 0 gives the minimum-norm
    solution the static prediction assumes).  Arithmetic is float64 always.
    """

    name = "rgap"
    defaults = {"solver": "lsqr", "max_iter": 5000, "tol": 1e-14, "relu_tol": 1e-9, "image_start": 0.0}

    def applicable(self, model: nn.Module, input_shape: tuple | None = None) -> str | None:
        """None for a chain model R-GAP can invert, else why it is skipped."""
        if input_shape is None:
            traced = trace_chain(model)
            return traced if isinstance(traced, str) else None
        chain = build_chain(prepare_model(model, next(model.parameters()).device, torch.float64), input_shape)
        return chain if isinstance(chain, str) else None

    def _batch_reason(self, target: Target) -> str | None:
        """The recursion needs one image per gradient."""
        if target.batch_size > 1 and not target.per_sample:
            return f"{self.name} needs one gradient per image (got a summed batch of {target.batch_size})"
        return None

    def _run(self, target: Target, seed: int, refine_factory=None):
        """Recursion per independent problem, in float64 on the target's device."""
        model = prepare_model(target.model, target.device, torch.float64)
        chain = build_chain(model, target.input_shape)
        images, labels, layers, iterations = [], [], [], 0
        for index, prob in enumerate(target.problems()):
            grads = gradients_as(prob, torch.float64)
            label = head_labels(prob, grads, 1)
            refine = None if refine_factory is None else refine_factory(chain, grads, label, seed + index)
            image, iters, info = rgap_recursion(chain, grads, int(label[0]), self.settings, refine)
            images.append(image)
            labels.append(label)
            layers.append(info)
            iterations += iters
        return torch.cat(images), iterations, torch.cat(labels), {"layers": layers}
