"""Checks on the names an archive gives things.

torch pastes node names, input names and attribute paths into Python source it generates and
``exec``s (``torch.fx`` code generation), so a name must be a plain identifier or a dotted path
of them; anything else could smuggle code in.  Each check returns None when the value is fine,
else the reason, worded to follow "... has a name 'x' that".
"""
from __future__ import annotations

import keyword
import re
from typing import Any

from archscan.model.pt2.limits import MAX_NAME_LEN

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: one component of an nn.Module attribute path (a Sequential index is all digits)
FQN_PART = re.compile(r"[A-Za-z0-9_\-]+\Z")
#: string literals allowed in guards and pytree contexts: no quotes, backslashes or newlines
SAFE_STR = re.compile(r"[A-Za-z0-9_ .:/\-]*\Z")


def is_dunder(part: str) -> bool:
    """True for ``__x``/``x__`` components: attribute access into Python internals, not a name."""
    return part.startswith("__") or part.endswith("__")


def check_ident(value: Any, allow_empty: bool = False) -> str | None:
    """None if ``value`` is a plain Python identifier (not a keyword), else why not."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a name"
    if value == "" and allow_empty:
        return None
    if not value.isidentifier() or keyword.iskeyword(value) or len(value) > MAX_NAME_LEN:
        return "is not a plain Python identifier (torch pastes it into generated Python code)"
    return None


def check_fqn(value: Any, allow_empty: bool = False) -> str | None:
    """None if ``value`` is a dotted attribute path like ``layers.0.weight``, else why not."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a name"
    if value == "" and allow_empty:
        return None
    parts = value.split(".")
    if len(value) > MAX_NAME_LEN or not all(FQN_PART.match(p) for p in parts):
        return "is not a dotted attribute path (torch pastes it into generated Python code)"
    if any(is_dunder(p) for p in parts):
        return "contains a dunder component"
    return None
