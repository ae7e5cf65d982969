"""Which operators a graph node may call.

torch's deserializer resolves a node's target string with a getattr chain from ``torch``,
``_operator`` or ``math`` and accepts any callable it reaches (``torch.os.system`` is
``os.system``); the graph then calls it whenever the program runs.  So targets are checked
against allow-lists: operator overloads in known namespaces, the symbolic-shape helpers and a
few pure builtins.
"""
from __future__ import annotations

import math
from typing import Any

from archscan.model.pt2.names import IDENT, is_dunder

#: Operator namespaces a plain exported image classifier uses.  aten: the ATen op set;
#: prims: primitive decompositions; higher_order: control flow (only HIGHER_ORDER_OPS);
#: quantized_decomposed: PT2E-quantized models.  Anything else needs extra_op_namespaces.
DEFAULT_OP_NAMESPACES = frozenset({"aten", "prims", "higher_order", "quantized_decomposed"})

#: operators in allowed namespaces that touch the file system when the graph runs:
#: aten::save (writes a file), aten::from_file (reads / with shared=True writes back through an
#: mmap of any path), aten::_print (writes to stdout).
DENIED_OPS = frozenset({("aten", "save"), ("aten", "from_file"), ("aten", "_print")})

#: higher-order ops that only take sub-graphs of the same archive (no callables, no objects).
HIGHER_ORDER_OPS = frozenset({
    "cond", "while_loop", "map_impl", "scan", "associative_scan", "invoke_subgraph",
    "wrap_with_set_grad_enabled", "wrap_with_autocast", "auto_functionalized",
    "auto_functionalized_v2", "with_effects", "out_dtype", "flex_attention",
})

#: `_operator.X` targets: the builtins the serializer writes (torch's _SYM_OPS + getitem and
#: the verifier's allowed builtins).  Not operator.call / attrgetter / methodcaller.
OPERATOR_FUNCS = frozenset({
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift",
    "rshift",
})

#: `torch.X` Python-function targets the export verifier accepts, minus anything that imports
#: modules (torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch) or is only
#: used by functorch transforms.
TORCH_FUNCS = frozenset({
    "torch.sym_int", "torch.sym_float", "torch.sym_ite", "torch.sym_max", "torch.sym_min",
    "torch.sym_not", "torch.sym_sqrt", "torch.sym_sum",
    "torch._C._set_grad_enabled", "torch.autograd.grad_mode.set_grad_enabled",
    "torch.amp.autocast_mode._enter_autocast", "torch.amp.autocast_mode._exit_autocast",
    "torch.fx.experimental.symbolic_shapes.cast_symbool_to_symint_guardless",
})

_NOT_PLAIN = ("is not a plain operator (allowed: torch.ops.<namespace>.<op>[.<overload>], "
              "_operator.*, math.*, torch.sym_*)")


def check_target(target: Any, namespaces: frozenset[str] = DEFAULT_OP_NAMESPACES,
                 extra_targets: frozenset[str] = frozenset()) -> str | None:
    """Check a node's target string.

    Parameters
    ----------
    target : Any
        The ``target`` (or ``as_operator``) value from the program JSON.
    namespaces : frozenset of str
        Operator namespaces allowed under ``torch.ops``.
    extra_targets : frozenset of str
        Exact target strings allowed in addition.

    Returns
    -------
    str or None
        None if ``target`` is a plain operator, else why not (to follow "calls 'x', which").
    """
    if not isinstance(target, str):
        return f"is a {type(target).__name__}, not an operator name"
    if target in extra_targets:
        return None
    if len(target) > 512:
        return "is too long to be an operator name"
    if target.startswith("#"):
        return "is an extension operator (resolved by a registered handler, not a plain operator)"
    parts = target.split(".")
    if any(not IDENT.match(p) for p in parts):
        return "is not a dotted Python name"
    if any(is_dunder(p) for p in parts):
        return "contains a dunder component (attribute access, not an operator)"
    if parts[:2] == ["torch", "ops"]:
        return _check_op_overload(parts, namespaces)
    if parts[0] in ("_operator", "math"):
        return _check_builtin(parts)
    return None if target in TORCH_FUNCS else _NOT_PLAIN


def _check_op_overload(parts: list[str], namespaces: frozenset[str]) -> str | None:
    """``torch.ops.<namespace>.<op>[.<overload>]`` in an allowed namespace and not denied."""
    if len(parts) not in (4, 5):
        return "is not torch.ops.<namespace>.<op>[.<overload>]"
    ns = parts[2]
    if ns not in namespaces:
        return (f"is in operator namespace {ns!r}, which is not allowed "
                f"(allowed: {', '.join(sorted(namespaces))})")
    if ns == "higher_order" and (len(parts) != 4 or parts[3] not in HIGHER_ORDER_OPS):
        return "is not one of the allowed higher-order ops"
    if (ns, parts[3]) in DENIED_OPS:
        return "is an operator that reads or writes files when the graph runs"
    return None


def _check_builtin(parts: list[str]) -> str | None:
    """``_operator.<fn>`` from OPERATOR_FUNCS or ``math.<fn>`` naming a math function."""
    if parts[0] == "_operator":
        if len(parts) == 2 and parts[1] in OPERATOR_FUNCS:
            return None
        return "is not one of the allowed _operator functions"
    if len(parts) == 2 and callable(getattr(math, parts[1], None)):
        return None
    return "is not a math function"
