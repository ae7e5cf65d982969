"""One layer vocabulary for scan and the attacks: a traced op becomes a closed-form attack step
through the same layer families (``archscan.layers``) that scan classifies it with.  A family
declares its ``attack`` step, or the reason (``attack_why``) the closed-form attacks cannot step
through it; an op no family knows is not attacked either."""
from __future__ import annotations

from torch import nn

from archscan.layers import REGISTRY
from archscan.validate.attacks.steps import Step


def _step(kind, name: str, module, args=(), kwargs=None):
    """The Step of a classified op, or the reason the chain stops there."""
    if kind is None:
        return f"unsupported operation at {name}: no layer family knows it"
    if kind.attack is None:
        return f"{kind.kind} at {name}: {kind.attack_why or 'not attacked in closed form'}"
    op, keys = kind.attack
    if op in ("linear", "conv"):
        wanted = nn.Linear if op == "linear" else nn.Conv2d
        return Step(op, name, module) if isinstance(module, wanted) else f"{kind.kind} at {name}: {kind.attack_why}"
    if module is not None and getattr(module, "training", False) and op in ("affine", "identity"):
        return f"{kind.kind} {name} in train mode (its batch statistics or mask are unknowns)"
    if op == "affine" and module is None:
        return f"{kind.kind} at {name}: a functional BatchNorm is not attacked in closed form"
    if op == "reshape":
        return Step("reshape", name, module)
    params = kind.extract(module, args, kwargs or {})
    return Step("act", name, module, op, tuple(float(params[k]) for k in keys))


def module_step(name: str, module: nn.Module):
    """Step for a submodule call (``torch.fx`` call_module)."""
    return _step(REGISTRY.for_module(module), name, module)


def node_step(node):
    """Step for a traced function or method call."""
    kind = REGISTRY.for_method(node.target) if node.op == "call_method" else REGISTRY.for_function(node.target)
    return _step(kind, node.name, None, node.args, node.kwargs)


def op_step(node, gm):
    """Step for any traced tensor operation of ``gm`` (a submodule call or a function/method)."""
    if node.op == "call_module":
        return module_step(node.target, gm.get_submodule(node.target))
    return node_step(node)
