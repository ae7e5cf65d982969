"""Checks on serialized pytree TreeSpecs (a program's ``in_spec`` / ``out_spec``).

``treespec_loads`` imports modules named in the data: an ``{"__enum__": ..., "fqn":
"module:Class"}`` context (``importlib.import_module`` + getattr chain + ``cls[name]``) and a
``collections.defaultdict`` context (``default_factory_module``).  Dict keys of the input spec
are pasted into generated code between single quotes.  So only the container types an exported
classifier uses are accepted, with contexts of plain strings.
"""
from __future__ import annotations

import json
from typing import Any, Iterator

from archscan.model.pt2.names import SAFE_STR

#: pytree node types a TreeSpec may name.  collections.defaultdict is left out: its context
#: names a module that torch *imports* while loading.
TREESPEC_TYPES = frozenset({
    "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict",
    "collections.namedtuple", "collections.deque", "torch.Size",
    "torch.fx.immutable_collections.immutable_dict",
    "torch.fx.immutable_collections.immutable_list",
})

_NODE_KEYS = {"type", "context", "children_spec"}


def check_treespec(text: Any) -> str | None:
    """Check a serialized TreeSpec.

    Parameters
    ----------
    text : Any
        The JSON string torch stores (``[1, {"type": ..., "context": ..., "children_spec":
        [...]}]``).

    Returns
    -------
    str or None
        None if the TreeSpec is plain data, else why not (to follow "has an in_spec that").
    """
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not a string"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        return f"is not JSON ({type(e).__name__})"
    if not (isinstance(data, list) and len(data) == 2 and data[0] == 1):
        return "is not a protocol-1 TreeSpec"
    stack = [data[1]]
    while stack:
        why = _check_node(stack.pop(), stack)
        if why:
            return why
    return None


def _check_node(node: Any, stack: list) -> str | None:
    """Check one TreeSpec node and push its children onto ``stack``."""
    if not isinstance(node, dict) or set(node) != _NODE_KEYS:
        return "has a malformed TreeSpec node"
    typ, ctx, children = node["type"], node["context"], node["children_spec"]
    if typ is None:
        return "has a malformed leaf" if ctx is not None or children else None
    if typ not in TREESPEC_TYPES:
        if typ == "collections.defaultdict":
            return "names a defaultdict, whose context makes torch import a module"
        return f"names pytree type {typ!r}, which is not allowed"
    if not isinstance(children, list):
        return "has a malformed children_spec"
    stack.extend(children)
    return None if ctx is None else _check_context(ctx)


def _check_context(ctx: Any) -> str | None:
    """A node's context: a JSON string without enum references or code-breaking keys."""
    if not isinstance(ctx, str):
        return "has a non-string context"
    try:
        c = json.loads(ctx)
    except (ValueError, RecursionError):
        return "has a context that is not JSON"
    if any(k == "__enum__" for k, _v in _walk_json_keys(c)):
        return "has an enum context, which makes torch import the module it names"
    for sub in _walk_strings(c):
        if not SAFE_STR.match(sub):
            return f"has a key {sub[:40]!r} with characters torch would paste into code"
    return None


def _walk_json_keys(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of every dict nested in ``obj``."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                yield k, v
                stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)


def _walk_strings(obj: Any) -> Iterator[str]:
    """Every string nested in ``obj``, dict keys included."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            yield o
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
