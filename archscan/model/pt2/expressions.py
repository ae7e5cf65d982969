"""Grammars for the two kinds of code-like strings a program JSON carries.

* ``expr_str``: symbolic-shape expressions, which torch hands to ``sympy.sympify`` -- an ``eval``
  with builtins in scope.
* ``guards_code``: shape guards, which ``ExportedProgram.module()`` pastes into Python source and
  ``exec``\\s on every call (and copies inside a double-quoted literal for its error message).

Both are parsed with :mod:`ast` (parsing runs nothing) and walked node by node; only the syntax
torch itself writes is accepted.  Each check returns None when the string is fine, else the reason.
"""
from __future__ import annotations

import ast
import math
import re
from typing import Any, Callable

from archscan.model.pt2.limits import MAX_EXPR_LEN
from archscan.model.pt2.names import IDENT, SAFE_STR, is_dunder
from archscan.model.pt2.targets import TORCH_FUNCS

_SYMPY_CALLS = frozenset({
    # sympy classes srepr() writes for shape expressions
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality",
    "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "And", "Or", "Not",
    "Piecewise", "ExprCondPair", "sqrt",
    # torch.utils._sympy.functions (the locals torch passes to sympify)
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "Identity",
})
_SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "True", "False", "pi", "E",
                          "int_oo"})
#: bare names sympify turns into Symbols: torch's shape symbols are <prefix><index> (s0, u3,
#: zuf1 ...), which never name a builtin or a sympy function.
_SYMBOL_NAME = re.compile(r"[a-z]{1,4}[0-9]+\Z")
_FLOAT_STR = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z|[+-]?(inf|nan)\Z")
_STRING_FIRST_ARG = frozenset({"Symbol", "Float"})
_BIG_EXPONENT_FUNCS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"})
_MAX_INT_LITERAL = 1 << 64
_MAX_CONST_EXPONENT = 64
_MAX_EXPONENT_PRODUCT = 1 << 16

_UNARY_OPS = (ast.USub, ast.UAdd, ast.Not, ast.Invert)
_COMPARE_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ARITH_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd,
              ast.BitOr, ast.BitXor)

_GUARD_TENSOR_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_BUILTINS = frozenset({"max", "min", "abs", "int", "float", "bool", "round", "len"})
_GUARD_FUNCS = frozenset({"IsNonOverlappingAndDenseIndicator",
                          "cast_symbool_to_symint_guardless"})
_GUARD_ARITH_OPS = _ARITH_OPS + (ast.LShift, ast.RShift)


def parse_expr(text: Any) -> ast.Expression:
    """Parse ``text`` as one Python expression; ValueError (with the reason) if it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"is a {type(text).__name__}, not a string")
    if len(text) > MAX_EXPR_LEN:
        raise ValueError("is too long")
    if any(c in text for c in "\n\r\x00\\"):
        raise ValueError("contains a newline, NUL or backslash")
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ValueError(f"is not a Python expression ({type(e).__name__})") from None


def const_int(node: ast.AST) -> int | None:
    """The value of an integer literal, ``-literal`` or ``Integer(literal)``; else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = const_int(node.operand)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == "Integer" and len(node.args) == 1:
        return const_int(node.args[0])
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return int(node.value)
    return None


def _first(reasons) -> str | None:
    """The first reason that is not None (reasons are computed lazily, in order)."""
    return next((r for r in reasons if r), None)


# -- sympy shape expressions ---------------------------------------------------------------------


def check_sympy_expr(text: Any) -> str | None:
    """Check a symbolic-shape expression before ``sympy.sympify`` evaluates it.

    Accepted: calls of known sympy / torch shape functions, numbers, the sympy constants, shape
    symbols, arithmetic and comparisons, and string literals only as the name of a Symbol or the
    digits of a Float.  Nested constant exponents are bounded, because sympy evaluates numeric
    powers exactly (a denial-of-service otherwise).

    Parameters
    ----------
    text : Any
        An ``expr_str`` value from the program JSON.

    Returns
    -------
    str or None
        None if sympify can evaluate ``text`` harmlessly, else why not.
    """
    try:
        tree = parse_expr(text)
    except ValueError as e:
        return str(e)
    return _sympy(tree.body, 1)


def _at(node: ast.AST, why: str) -> str:
    return f"{why} (at {type(node).__name__})"


def _sympy(node: ast.AST, prod: int) -> str | None:
    """Check one node; ``prod`` is the product of the constant exponents enclosing it."""
    visit = _SYMPY_VISITORS.get(type(node))
    if visit is None:
        return _at(node, "syntax not allowed in a shape expression")
    return visit(node, prod)


def _exponent(node: ast.AST, e: int | None, prod: int) -> tuple[str | None, int]:
    """Account for a constant exponent ``e``: (reason if too large, the new product)."""
    if e is None:
        return None, prod
    if abs(e) > _MAX_CONST_EXPONENT:
        return _at(node, "constant exponent/shift too large"), prod
    prod *= max(1, abs(e))
    if prod > _MAX_EXPONENT_PRODUCT:
        return _at(node, "constant exponents nest too deeply"), prod
    return None, prod


def _sympy_constant(node: ast.Constant, _prod: int) -> str | None:
    v = node.value
    if isinstance(v, bool) or v is None or isinstance(v, float):
        return None
    if isinstance(v, int):
        return None if abs(v) <= _MAX_INT_LITERAL else _at(node, "integer literal too large")
    return _at(node, f"{type(v).__name__} literal outside Symbol()/Float()")


def _sympy_name(node: ast.Name, _prod: int) -> str | None:
    if node.id in _SYMPY_NAMES or _SYMBOL_NAME.match(node.id):
        return None
    return _at(node, f"name {node.id!r} is neither a shape symbol nor a sympy constant")


def _sympy_unary(node: ast.UnaryOp, prod: int) -> str | None:
    if isinstance(node.op, _UNARY_OPS):
        return _sympy(node.operand, prod)
    return _at(node, "operator not allowed")


def _sympy_binop(node: ast.BinOp, prod: int) -> str | None:
    if not isinstance(node.op, _ARITH_OPS):
        return _at(node, "operator not allowed")
    if not isinstance(node.op, ast.Pow):
        return _first(_sympy(n, prod) for n in (node.left, node.right))
    why, inner = _exponent(node, const_int(node.right), prod)
    return why or _sympy(node.left, inner) or _sympy(node.right, prod)


def _sympy_compare(node: ast.Compare, prod: int) -> str | None:
    if not all(isinstance(op, _COMPARE_OPS) for op in node.ops):
        return _at(node, "comparison not allowed")
    return _first(_sympy(n, prod) for n in [node.left, *node.comparators])


def _sympy_boolop(node: ast.BoolOp, prod: int) -> str | None:
    return _first(_sympy(n, prod) for n in node.values)


def _sympy_call(node: ast.Call, prod: int) -> str | None:
    if not isinstance(node.func, ast.Name):
        return _at(node, "call of something other than a sympy function")
    fn = node.func.id
    if fn not in _SYMPY_CALLS:
        return _at(node, f"call of {fn!r}, which is not a sympy shape function")
    if any(isinstance(a, ast.Starred) for a in node.args):
        return _at(node, "starred argument")
    why, args = _string_first_arg(node, fn)
    if why:
        return why
    inner = prod
    if fn in _BIG_EXPONENT_FUNCS and len(node.args) == 2:
        why, inner = _exponent(node, const_int(node.args[1]), prod)
        if why:
            return why
    return _first(_sympy(a, inner) for a in args) or _sympy_keywords(node)


def _string_first_arg(node: ast.Call, fn: str) -> tuple[str | None, list[ast.AST]]:
    """Symbol('s0') / Float('1.5'): check the string, return the arguments still to visit."""
    args = list(node.args)
    if fn in _STRING_FIRST_ARG and args and isinstance(args[0], ast.Constant) \
            and isinstance(args[0].value, str):
        s = args[0].value
        ok = IDENT.match(s) if fn == "Symbol" else _FLOAT_STR.match(s)
        return (None if ok else _at(node, f"{fn}() of {s[:40]!r}")), args[1:]
    return None, args


def _sympy_keywords(node: ast.Call) -> str | None:
    """Assumption keywords (integer=True, precision=53): lower-case names, small constant values."""
    for kw in node.keywords:
        if kw.arg is None or not re.fullmatch(r"[a-z][a-z_]*", kw.arg):
            return _at(node, "keyword argument not allowed")
        if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, (bool, int))
                and abs(kw.value.value) <= 4096):
            return _at(node, f"keyword {kw.arg}= must be a bool or a small int")
    return None


_SYMPY_VISITORS: dict[type, Callable[[Any, int], str | None]] = {
    ast.Constant: _sympy_constant, ast.Name: _sympy_name, ast.UnaryOp: _sympy_unary,
    ast.BinOp: _sympy_binop, ast.Compare: _sympy_compare, ast.BoolOp: _sympy_boolop,
    ast.Call: _sympy_call,
}


# -- guards_code -----------------------------------------------------------------------------------


def check_guard_code(text: Any) -> str | None:
    """Check a ``guards_code`` string before ``ExportedProgram.module()`` ``exec``\\s it.

    Accepted: comparisons / arithmetic over ``L[...]`` inputs, their ``.size()/.stride()/
    .storage_offset()/.dim()/.numel()``, numbers, ``math.<fn>``, ``torch.sym_*`` and a few pure
    builtins; string literals only without quotes or backslashes.

    Parameters
    ----------
    text : Any
        One ``guards_code`` entry, e.g. ``L['x'].size()[0] > 4``.

    Returns
    -------
    str or None
        None if ``text`` is a plain shape guard, else why not.
    """
    try:
        tree = parse_expr(text)
    except ValueError as e:
        return str(e)
    return _guard(tree.body)


def _guard(node: ast.AST) -> str | None:
    visit = _GUARD_VISITORS.get(type(node))
    return visit(node) if visit else f"{type(node).__name__} not allowed"


def _guard_constant(node: ast.Constant) -> str | None:
    v = node.value
    if isinstance(v, str):
        return None if SAFE_STR.match(v) else "string literal with unsafe characters"
    if isinstance(v, bool) or v is None or isinstance(v, float):
        return None
    if isinstance(v, int):
        return None if abs(v) <= _MAX_INT_LITERAL else "integer literal too large"
    return f"{type(v).__name__} literal"


def _guard_name(node: ast.Name) -> str | None:
    return None if node.id in ("L", "inf") else f"name {node.id!r} not allowed"


def _guard_subscript(node: ast.Subscript) -> str | None:
    sl = node.slice
    if not (isinstance(sl, ast.Constant) and isinstance(sl.value, (int, str))
            and not isinstance(sl.value, bool)):
        return "subscript must be a constant int or str"
    return _guard(sl) or _guard(node.value)


def _guard_unary(node: ast.UnaryOp) -> str | None:
    return _guard(node.operand) if isinstance(node.op, _UNARY_OPS) else "operator not allowed"


def _guard_binop(node: ast.BinOp) -> str | None:
    if not isinstance(node.op, _GUARD_ARITH_OPS):
        return "operator not allowed"
    if isinstance(node.op, (ast.Pow, ast.LShift, ast.RShift)):
        e = const_int(node.right)
        if e is not None and abs(e) > _MAX_CONST_EXPONENT:
            return "constant exponent/shift too large"
    return _guard(node.left) or _guard(node.right)


def _guard_compare(node: ast.Compare) -> str | None:
    if not all(isinstance(op, _COMPARE_OPS) for op in node.ops):
        return "comparison not allowed"
    return _first(_guard(n) for n in [node.left, *node.comparators])


def _guard_call(node: ast.Call) -> str | None:
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        return "keyword or starred arguments"
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr in _GUARD_TENSOR_METHODS \
            and not (isinstance(f.value, ast.Name) and f.value.id in ("math", "torch")):
        return _guard_tensor_method(node, f)
    return _guard_callee(f) or _first(_guard(a) for a in node.args)


def _guard_tensor_method(node: ast.Call, f: ast.Attribute) -> str | None:
    """``<input>.size(k)`` and friends: the receiver is checked, the argument is a constant."""
    why = _guard(f.value)
    if why:
        return why
    if len(node.args) > 1 or any(const_int(a) is None for a in node.args):
        return f".{f.attr}() takes at most one integer"
    return None


def _guard_callee(f: ast.AST) -> str | None:
    """A called builtin, ``math.<fn>`` or ``torch.sym_*``; anything else is refused."""
    if isinstance(f, ast.Name):
        ok = f.id in _GUARD_BUILTINS or f.id in _GUARD_FUNCS
        return None if ok else f"call of {f.id!r} not allowed"
    if not isinstance(f, ast.Attribute):
        return "call of an expression"
    if is_dunder(f.attr):
        return "dunder attribute"
    module = f.value.id if isinstance(f.value, ast.Name) else None
    if module == "math":
        ok = callable(getattr(math, f.attr, None))
        return None if ok else f"math.{f.attr} is not a math function"
    if module == "torch":
        ok = f"torch.{f.attr}" in TORCH_FUNCS and f.attr.startswith("sym_")
        return None if ok else f"torch.{f.attr} not allowed"
    return f"method .{f.attr}() not allowed"


_GUARD_VISITORS: dict[type, Callable[[Any], str | None]] = {
    ast.Constant: _guard_constant, ast.Name: _guard_name, ast.Subscript: _guard_subscript,
    ast.UnaryOp: _guard_unary, ast.BinOp: _guard_binop, ast.Compare: _guard_compare,
    ast.BoolOp: lambda node: _first(_guard(n) for n in node.values),
    ast.IfExp: lambda node: _guard(node.test) or _guard(node.body) or _guard(node.orelse),
    ast.Call: _guard_call,
    ast.Attribute: lambda node: f"attribute .{node.attr} not allowed",
}
