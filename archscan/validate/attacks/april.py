"""APRIL (Lu et al. 2022): the image from a learned positional embedding's gradient.

A ViT adds a learned ``pos`` to the token sequence, ``t = layout(conv(x)) + pos`` with ``layout``
a bijective rearrangement of the patch-embedding conv's output (flatten, transpose, concatenation
with a constant class token).  So ``dl/dpos = dl/dt`` (batch of one), and pulling that back
through ``layout`` (``layout^T``; the class-token position drops out) gives the conv's output
gradient ``g`` exactly.  With ``g`` known, the conv's weight gradient ``dW = dl/dW(x; g)`` is
linear in the image, and for a patch embedding (kernel = stride, no padding) it is, per input
channel, ``dW_c = G X_c`` with ``G`` the filters x patches matrix of ``g`` and ``X_c`` the patches
of the image: one least-squares solve (dense, ``G`` is as small as the token count).  Other conv
geometries use the gradient rows of :class:`~.layer_system.LayerSystem` (LSQR or dense).

The pattern is found in the model's ``torch.fx`` trace (scan's, :mod:`archscan.model.fxgraph`):
a Conv2d reading the image, followed only by layout operations (flatten, reshape, view, transpose,
permute, contiguous, concatenation with tensors that do not depend on the image) up to an addition
of an ``nn.Parameter`` of the same shape as the token sequence.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from archscan.model.fxgraph import propagate, trace
from archscan.validate.attacks.analytic import head_labels, param_key
from archscan.validate.attacks.base import Attack, Target, gradients_as, prepare_model
from archscan.validate.attacks.graph import is_shape_query
from archscan.validate.attacks.layer_system import LayerSystem
from archscan.validate.attacks.solvers import solve_system
from archscan.validate.attacks.steps import Step

_LAYOUT = {"flatten", "reshape", "view", "transpose", "permute", "contiguous", "expand", "cat",
           "unsqueeze", "squeeze", "unflatten"}
_ADD = {operator.add, torch.add, "add"}


def _fname(node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _is_param(gm, node) -> bool:
    """True for a ``get_attr`` node that names an ``nn.Parameter``."""
    if node.op != "get_attr":
        return False
    try:
        return isinstance(gm.get_parameter(node.target), nn.Parameter)
    except AttributeError:
        return False


def _depends_on(node, sources: set, memo: dict) -> bool:
    """True when ``node`` (transitively) reads the values of one of ``sources`` (sizes do not count)."""
    if node in sources:
        return True
    if is_shape_query(node, set()):
        return False
    if node not in memo:
        memo[node] = any(_depends_on(n, sources, memo) for n in node.all_input_nodes)
    return memo[node]


def find_pattern(model: nn.Module):
    """``(graph module, conv node, add node, parameter name, token node)`` or the reason none exists.

    ``token node`` is the addend that is not the parameter: ``layout(conv(x))``.
    """
    try:
        gm = trace(model)
    except Exception as exc:  # noqa: BLE001 - untraceable models have no detectable pattern
        return f"not traceable by torch.fx ({type(exc).__name__})"
    image = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(image) != 1:
        return "the model must take exactly one input"
    convs = [n for n in image[0].users if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), nn.Conv2d)]
    for conv in convs:
        found = _follow(gm, conv, image[0])
        if not isinstance(found, str):
            return (gm, conv, *found)
    if not convs:
        return "no Conv2d reads the image (no patch embedding)"
    return found


def _follow(gm, conv, image):
    """Walk from the conv through layout operations to ``+ parameter``: ``(add, name, token)``."""
    memo: dict = {}
    current = conv
    for _ in range(64):
        users = [u for u in current.users if not is_shape_query(u, set())]
        if len(users) != 1:
            return f"the output of {conv.target} is used {len(users)} times before any positional embedding"
        user = users[0]
        if user.op in ("call_function", "call_method") and (user.target in _ADD):
            other = [a for a in user.args if isinstance(a, torch.fx.Node) and a is not current]
            if len(other) == 1 and _is_param(gm, other[0]) and len(user.args) == 2 and not user.kwargs:
                return user, other[0].target, current
            return f"{conv.target}: the first addition ({user.name}) does not add an nn.Parameter"
        if user.op not in ("call_function", "call_method") or _fname(user) not in _LAYOUT:
            what = (type(gm.get_submodule(user.target)).__name__ if user.op == "call_module"
                    else _fname(user))
            return (f"no positional embedding: the output of Conv2d {conv.target!r} reaches {what} "
                    f"before any addition of an nn.Parameter")
        others = [n for n in user.all_input_nodes if n is not current]
        if any(_depends_on(n, {image, conv}, memo) for n in others):
            return f"{conv.target}: {user.name} mixes the patch tokens with other image-dependent values"
        current = user
    return f"{conv.target}: no positional embedding found"


def _layout_fn(gm, conv, token):
    """``c -> layout(c)``: the traced operations from the conv's output to the token sequence."""
    graph = torch.fx.Graph()
    env = {conv: graph.placeholder("c")}

    def copy(node):
        if node not in env:
            for n in node.all_input_nodes:
                copy(n)
            env[node] = graph.node_copy(node, lambda n: env[n])
        return env[node]

    graph.output(copy(token))
    return torch.fx.GraphModule(gm, graph)


def patch_solve(conv: nn.Conv2d, g: torch.Tensor, dW: torch.Tensor, image_shape: tuple):
    """Image from the gradient rows of a non-overlapping patch conv: ``dW = G X`` per patch.

    Returns None when the conv is not a plain patch embedding (kernel = stride, no padding,
    dilation 1, groups 1, image tiled exactly).
    """
    k, s = tuple(conv.kernel_size), tuple(conv.stride)
    C, H, W = image_shape
    plain = (k == s and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding in (0, (0, 0))
             and conv.padding_mode == "zeros" and H % k[0] == 0 and W % k[1] == 0)
    if not plain:
        return None
    G = g.reshape(g.shape[1], -1)                           # filters x patches
    X = torch.linalg.lstsq(G, dW.reshape(dW.shape[0], -1), driver="gelsd" if G.device.type == "cpu"
                           else None).solution          # patches x (C k k)
    return F.fold(X.T.unsqueeze(0), (H, W), k, stride=s)


def patch_null_basis(conv: nn.Conv2d, g: torch.Tensor, image_shape: tuple, rtol: float = 1e-10):
    """Image directions the patch conv's gradient rows cannot see: ``(k, C, H, W)``.

    ``dW = G X`` leaves ``X + v w^T`` free for every null vector ``v`` of ``G`` (filters x
    patches).  A pre-norm transformer always has one: every token gradient there is orthogonal
    to the all-ones vector (LayerNorm's backward and the residual stream preserve that), so
    ``1^T G = 0`` and a square ``G`` has a right null vector too.
    """
    G = g.reshape(g.shape[1], -1)
    _, S, Vh = torch.linalg.svd(G, full_matrices=True)
    rank = int((S > rtol * S[0]).sum()) if len(S) else 0
    null = Vh[rank:]                                       # (k_null, patches)
    if len(null) == 0:
        return None
    C, H, W = image_shape
    k = tuple(conv.kernel_size)
    taps = C * k[0] * k[1]
    eye = torch.eye(taps, dtype=g.dtype, device=g.device)
    cols = (eye[:, None, :, None] * null[None, :, None, :]).reshape(-1, taps, null.shape[1])
    return F.fold(cols, (H, W), k, stride=tuple(conv.stride))


def complete_by_matching(model: nn.Module, x: torch.Tensor, basis: torch.Tensor, label, grads: dict,
                         iterations: int):
    """Gauss-Newton on the coefficients of ``basis`` so that ``x + sum w_i basis_i`` reproduces
    every observed parameter gradient; returns the best image and the residual history."""
    names = [n for n, p in model.named_parameters() if n in grads]
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    observed = torch.cat([grads[n].flatten() for n in names])
    # one global scale: per-parameter scaling would amplify rounding noise in gradients that are
    # zero analytically (a key bias under softmax, ~1e-17 observed)
    scale = 1 / observed.norm().clamp_min(1e-300)
    y = label.view(1)

    def loss(p, img):
        out = torch.func.functional_call(model, ({**params, **p}, buffers), (img,))
        return F.cross_entropy(out, y, reduction="sum")

    chosen = {n: params[n] for n in names}

    def residual(w):
        img = x + torch.tensordot(w, basis, 1).unsqueeze(0)
        got = torch.func.grad(loss)(chosen, img)
        return (torch.cat([got[n].flatten() for n in names]) - observed) * scale

    w = torch.zeros(len(basis), dtype=x.dtype, device=x.device)
    r = residual(w)
    history = [float(r.norm())]
    for _ in range(iterations):
        J = torch.func.jacfwd(residual)(w)
        step = torch.linalg.lstsq(J, -r.unsqueeze(1)).solution.squeeze(1)
        for _ in range(30):  # backtracking: the full Gauss-Newton step may overshoot far away
            r_new = residual(w + step)
            if float(r_new.norm()) < history[-1]:
                break
            step = step / 2
        else:
            break
        w, r = w + step, r_new
        history.append(float(r.norm()))
        if history[-1] <= 1e-13 * history[0] or history[-1] > 0.999 * history[-2]:
            break
    best_w = w
    return x + torch.tensordot(best_w, basis, 1).unsqueeze(0), history


def _rows_solve(name: str, conv: nn.Conv2d, g, dW, image_shape, settings):
    """Image from the conv's gradient rows alone with the generic matrix-free system (one problem:
    the layer system and solvers take K problems, here K = 1)."""
    step = Step("conv", name, conv, in_shape=tuple(image_shape), out_shape=tuple(g.shape[1:]))
    known = torch.zeros_like(g, dtype=torch.bool)          # the conv's outputs are not observed
    system = LayerSystem(step, torch.zeros_like(g), known, g, dW)
    x0 = torch.full((1, *image_shape), float(settings["image_start"]), dtype=g.dtype, device=g.device)
    x, iterations = solve_system(system, settings, x0)
    return x, int(iterations[0]), float(system.residual(x)[0])


class AprilAttack(Attack):
    """APRIL: positional-embedding gradient -> patch-embedding output gradient -> image.

    Settings: ``solver``/``dense_max``/``max_iter``/``tol`` for convs that are not plain patch
    embeddings (as R-GAP), ``image_start`` (the least-squares solution closest to this constant
    image).  Arithmetic is float64 always.
    """

    name = "april"
    defaults = {"solver": "auto", "dense_max": 1024, "max_iter": 5000, "tol": 1e-14, "image_start": 0.0,
                "null_iterations": 10}

    def applicable(self, model: nn.Module, input_shape: tuple | None = None) -> str | None:
        """None when a positional embedding is added to a patch embedding's output, else why not."""
        found = find_pattern(model)
        if isinstance(found, str):
            return found
        if input_shape is not None:
            return self._shape_reason(model, found, input_shape)
        return None

    @staticmethod
    def _shape_reason(model, found, input_shape) -> str | None:
        """The parameter must have the token sequence's shape (no broadcasting within a sample)."""
        gm, conv, add, name, token = found
        ref = next(model.parameters())
        probe = torch.zeros((1, *input_shape), device=ref.device, dtype=ref.dtype)
        try:
            propagate(gm, probe)
        except Exception as exc:  # noqa: BLE001 - wrong input shape for this model
            return f"the model does not run on input shape {tuple(input_shape)} ({type(exc).__name__})"
        shape = tuple(token.meta["tensor_meta"].shape)
        pshape = tuple(gm.get_parameter(name).shape)
        if pshape not in (shape[1:], (1, *shape[1:])):
            return f"{name} {pshape} does not match the token sequence {shape}"
        return None

    def _batch_reason(self, target: Target) -> str | None:
        if target.batch_size > 1 and not target.per_sample:
            return f"{self.name} needs one gradient per image (got a summed batch of {target.batch_size})"
        return None

    def _run(self, target: Target, seed: int):
        model = prepare_model(target.model, target.device, torch.float64)
        gm, conv_node, _, pname, token = find_pattern(model)
        propagate(gm, torch.zeros((1, *target.input_shape), device=target.device, dtype=torch.float64))
        layout = _layout_fn(gm, conv_node, token)
        out_shape = (1, *conv_node.meta["tensor_meta"].shape[1:])
        conv = gm.get_submodule(conv_node.target)
        images, labels, info, iterations = [], [], [], 0
        for prob in target.problems():
            grads = gradients_as(prob, torch.float64)
            dpos = grads[pname].reshape(1, *token.meta["tensor_meta"].shape[1:])
            c = torch.zeros(out_shape, dtype=torch.float64, device=target.device)
            _, pull = torch.func.vjp(layout, c)
            g = pull(dpos)[0]                             # dl/d(conv output): class token dropped
            dW = grads[param_key(conv_node.target, "weight")]
            x, iters, how = patch_solve(conv, g, dW, target.input_shape), 0, "patch"
            if x is None:
                x, iters, _ = _rows_solve(conv_node.target, conv, g, dW, target.input_shape, self.settings)
                how = "gradient rows"
            label = self._labels(prob, grads)
            basis = patch_null_basis(conv, g, target.input_shape) if how == "patch" else None
            record = {"conv": conv_node.target, "parameter": pname, "solve": how,
                      "bias_check": bias_check(conv, g, grads, conv_node.target),
                      "null_directions": 0 if basis is None else len(basis)}
            if basis is not None and label is not None and self.settings["null_iterations"] > 0:
                with torch.enable_grad():
                    x, history = complete_by_matching(model, x.reshape(1, *target.input_shape), basis,
                                                      label, grads, self.settings["null_iterations"])
                record["matching_residual"] = history
                iters += len(history) - 1
            images.append(x.reshape(1, *target.input_shape))
            labels.append(label)
            info.append(record)
            iterations += iters
        lab = None if any(lb is None for lb in labels) else torch.cat(labels)
        return torch.cat(images), iterations, lab, {"problems": info}

    @staticmethod
    def _labels(prob: Target, grads: dict):
        """Given or iDLG-inferred labels; None where the model has no Linear output layer."""
        try:
            return head_labels(prob, grads, 1)
        except ValueError:
            return None


def bias_check(conv: nn.Conv2d, g: torch.Tensor, grads: dict, name: str):
    """Relative mismatch of the conv's observed bias gradient and ``sum g`` (0: g is right)."""
    db = grads.get(param_key(name, "bias"))
    if db is None or conv.bias is None:
        return None
    return float((g.sum(dim=(0, 2, 3)) - db).norm() / db.norm().clamp_min(1e-300))
