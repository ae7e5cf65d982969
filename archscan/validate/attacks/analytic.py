"""Closed-form attacks on Linear layers and iDLG label inference.

For ``z = W x + b`` with a batch of one image, ``dl/dW = g x^T`` and ``dl/db = g`` (``g = dl/dz``),
so every row ``j`` with ``g_j != 0`` gives ``x = (dl/dW)[j, :] / (dl/db)[j]`` exactly (Phong et al.
2017).  When that Linear layer reads (a reshaping of) the image, the image leaks in one division.
The same identity recovers the input of any Linear-with-bias, e.g. the classifier head, which is
where the recursive attacks (R-GAP, hybrid) start.

Labels (iDLG, Zhao et al. 2020): with softmax cross-entropy, ``g = softmax(z) - onehot(y)`` has a
single negative entry, at ``y``.  With a bias that is the negative entry of ``dl/db``; without a
bias, row ``y`` of ``dl/dW = g x^T`` is the only row whose inner products with all other rows are
negative.
"""
from __future__ import annotations

import torch
from torch import nn

from archscan.model.fxgraph import trace
from archscan.validate.attacks.base import Attack, Target, gradients_as

_RESHAPES = {"flatten", "view", "reshape", "contiguous"}


def linear_input(dW: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Input of a Linear-with-bias layer from its gradients (batch of one).

    Parameters
    ----------
    dW : torch.Tensor
        Weight gradient ``out x in``.
    db : torch.Tensor
        Bias gradient ``(out,)``.

    Returns
    -------
    torch.Tensor
        ``x`` of shape ``(in,)``, from the row with the largest ``|db_j|`` (the division with the
        least relative rounding error).
    """
    j = int(db.abs().argmax())
    if db[j] == 0:
        raise ValueError("all bias gradients are zero: the layer's input cannot be recovered")
    return dW[j] / db[j]


def linear_inputs(dW: torch.Tensor, db: torch.Tensor, count: int, tol: float = 1e-3) -> torch.Tensor:
    """Up to ``count`` inputs of a Linear-with-bias layer from summed batch gradients.

    With a batch, row ``j`` gives ``sum_b g_bj x_b / sum_b g_bj``: a single image wherever only
    one image reaches the row (e.g. a ReLU after the layer active for that image alone).  Rows
    that give the same vector as another row are such pure images (two mixtures with the same
    weights are a coincidence), so those come first, most repeated first; then rows by decreasing
    ``|db_j|`` that are not nearly parallel (cosine above ``1 - tol``) to one already kept.

    Returns
    -------
    torch.Tensor
        ``count x in`` (rows repeated if fewer distinct candidates exist).
    """
    if count == 1:
        return linear_input(dW, db).unsqueeze(0)
    rows = torch.nonzero(db.abs() > 1e-12 * db.abs().max()).flatten()
    cands = dW[rows] / db[rows, None]
    dist = torch.cdist(cands, cands) / cands.norm(dim=1).max().clamp_min(1e-300)
    repeats = (dist < 1e-8).sum(1) - 1
    order = sorted(range(len(rows)), key=lambda i: (-int(repeats[i]), -float(db[rows[i]].abs())))
    keep: list[torch.Tensor] = []
    for i in order:
        if len(keep) == count:
            break
        if all(_cosine(cands[i], k) < 1 - tol for k in keep):
            keep.append(cands[i])
    while len(keep) < count:
        keep.append(keep[len(keep) % len(keep)] if keep else torch.zeros_like(dW[0]))
    return torch.stack(keep)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two centred vectors (1 for identical images up to contrast)."""
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def infer_labels(dW: torch.Tensor, db: torch.Tensor | None = None, count: int = 1) -> torch.Tensor:
    """iDLG label inference from the output layer's gradients.

    Parameters
    ----------
    dW : torch.Tensor
        Gradient of the last Linear layer's weight, ``classes x features``.
    db : torch.Tensor or None
        Its bias gradient, if the layer has a bias.
    count : int
        Number of labels to return (batch size).  For ``count > 1`` the most negative entries are
        taken; repeated labels cannot be told apart, so the most likely label is repeated.

    Returns
    -------
    torch.Tensor
        Long tensor ``(count,)``.
    """
    if db is not None:
        order = torch.argsort(db)  # most negative first: -1 + p_y is the only negative entry
        distinct = max(int((db < 0).sum()), 1)
    else:
        gram = dW @ dW.T
        negatives = (gram < 0).sum(1).to(dW.dtype)  # row y is negative against every other row
        tie_break = gram.clamp_max(0).sum(1) / gram.abs().sum().clamp_min(1e-300)
        order = torch.argsort(negatives - tie_break, descending=True)
        distinct = max(int((negatives == negatives.max()).sum()), 1)
    if count <= distinct:
        return order[:count].clone()
    return torch.cat([order[:distinct], order[:1].repeat(count - distinct)])


def param_key(module_name: str, attr: str) -> str:
    """Gradient key of ``attr`` of the module ``module_name`` (``''`` for the root module)."""
    return f"{module_name}.{attr}" if module_name else attr


def _probe(model: nn.Module, input_shape: tuple, kinds=(nn.Linear,)):
    """Run ``model`` on a seeded random image, recording the inputs/outputs of ``kinds`` modules.

    Returns
    -------
    tuple
        ``(image, output, records)`` with ``records`` a list of ``(name, module, input, output)``
        in call order.
    """
    ref = next(model.parameters(), torch.empty(0))
    gen = torch.Generator(device=ref.device).manual_seed(12345)
    image = torch.rand((1, *input_shape), generator=gen, device=ref.device, dtype=ref.dtype)
    records, hooks = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, kinds):
            hook = mod.register_forward_hook(lambda m, i, o, n=name: records.append((n, m, i[0], o)))
            hooks.append(hook)
    try:
        with torch.no_grad():
            output = model(image)
    finally:
        for hook in hooks:
            hook.remove()
    return image, output, records


def find_head(model: nn.Module, input_shape: tuple) -> str | None:
    """Name of the Linear layer whose output is the model's output (the classifier head).

    Falls back to the last-called Linear with as many outputs as the model; None if there is none.
    """
    _, output, records = _probe(model, input_shape)
    for name, _, _, out in reversed(records):
        if out is output or (out.shape == output.shape and torch.equal(out, output)):
            return name
    for name, mod, _, _ in reversed(records):
        if mod.out_features == output.shape[-1]:
            return name
    return None


def image_linear(model: nn.Module, input_shape: tuple) -> str | None:
    """Name of a Linear-with-bias layer whose input is a reshaping of the image, or None.

    Decided by running the model on a random probe image and comparing each Linear input with the
    probe, so it works for any forward (Sequential, custom ``forward``, ``view``/``flatten``).
    """
    image, _, records = _probe(model, input_shape)
    flat = image.reshape(-1)
    for name, mod, inp, _ in records:
        if mod.bias is not None and inp.numel() == flat.numel() and torch.equal(inp.reshape(-1), flat):
            return name
    return None


def _image_linear_fx(model: nn.Module) -> str | None:
    """Shape-free version of :func:`image_linear`: follow the traced graph from the input."""
    try:
        graph = trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models simply cannot be checked this way
        return None
    current = next(n for n in graph.nodes if n.op == "placeholder")
    for node in graph.nodes:
        if current not in node.all_input_nodes:
            continue
        if node.op == "call_module":
            mod = model.get_submodule(node.target)
            if isinstance(mod, nn.Linear):
                return node.target if mod.bias is not None else None
            if not isinstance(mod, (nn.Flatten, nn.Identity)):
                return None
        elif getattr(node.target, "__name__", node.target) not in _RESHAPES | {"size"}:
            return None
        current = node if getattr(node.target, "__name__", node.target) != "size" else current
    return None


def head_labels(target: Target, grads: dict, count: int) -> torch.Tensor:
    """The target's labels, or labels inferred from the head's gradients (iDLG)."""
    if target.labels is not None:
        return target.labels.to(target.device)
    head = find_head(target.model, target.input_shape)
    if head is None:
        raise ValueError("no Linear output layer found to infer labels from")
    db = grads.get(param_key(head, "bias"))
    return infer_labels(grads[param_key(head, "weight")], db, count)


class AnalyticAttack(Attack):
    """Exact attack through a Linear-with-bias layer that reads the image.

    Settings: ``distinct_tol`` (batch heuristic of :func:`linear_inputs`).
    """

    name = "analytic"
    defaults = {"distinct_tol": 1e-3}

    def applicable(self, model: nn.Module, input_shape: tuple | None = None) -> str | None:
        """None if a Linear layer with bias takes (a reshaping of) the image, else why not."""
        found = image_linear(model, input_shape) if input_shape else _image_linear_fx(model)
        if found is None:
            return "no Linear layer with bias reads the image directly"
        return None

    def _run(self, target: Target, seed: int):
        """Divide weight-gradient rows by bias-gradient entries, problem by problem."""
        name = image_linear(target.model, target.input_shape)
        images, labels = [], []
        for prob in target.problems():
            grads = gradients_as(prob, torch.float64)  # one division: keep every bit
            dW, db = grads[param_key(name, "weight")], grads[param_key(name, "bias")]
            rows = linear_inputs(dW, db, prob.batch_size, self.settings["distinct_tol"])
            images.append(rows.reshape(prob.batch_size, *prob.input_shape))
            labels.append(head_labels(prob, grads, prob.batch_size))
        return torch.cat(images), 0, torch.cat(labels), {"layer": name}


def labels_per_problem(target: Target) -> torch.Tensor:
    """Labels of every independent problem as a ``P x m`` long tensor (given or inferred)."""
    rows = []
    for prob in target.problems():
        grads = gradients_as(prob, torch.float64)
        rows.append(head_labels(prob, grads, prob.batch_size).view(1, -1))
    return torch.cat(rows).to(target.device)
