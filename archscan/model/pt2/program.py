"""The program itself: checks on ``models/<name>.json``, the serialized ExportedProgram.

The JSON is walked as data.  Every value torch turns into something that runs is checked by the
key it sits under: node targets (resolved to callables), ``expr_str`` (sympify), names and
attribute paths (pasted into generated code), pytree specs (may import modules), custom-object
references (unpickled), and ``guards_code`` (``exec``\\d by ``ExportedProgram.module()``).
"""
from __future__ import annotations

from typing import Any

from archscan.model.pt2.errors import Refusal, quoted
from archscan.model.pt2.expressions import check_guard_code, check_sympy_expr
from archscan.model.pt2.names import IDENT, check_fqn, check_ident, is_dunder
from archscan.model.pt2.targets import check_target
from archscan.model.pt2.treespec import check_treespec

#: Verifier dialects torch registers (an empty list means torch's default ATEN verifier).
KNOWN_VERIFIERS = frozenset({"ATEN", "TRAINING", ""})
#: json.loads already bounds nesting by the recursion limit; this keeps the walk well inside it
_MAX_DEPTH = 400
_CUSTOM_OBJ_KEYS = ("custom_obj", "as_custom_obj", "custom_obj_name", "class_fqn")
_VALUE_TABLES = ("tensor_values", "sym_int_values", "sym_float_values", "sym_bool_values",
                 "custom_obj_values")


def check_program(rel: str, doc: Any, namespaces: frozenset[str],
                  extra_targets: frozenset[str]) -> set[str]:
    """Check one serialized program.

    Parameters
    ----------
    rel : str
        Its entry name, ``models/<name>.json`` (for messages).
    doc : Any
        The parsed JSON.
    namespaces, extra_targets : frozenset of str
        The operator allow-list (see :func:`archscan.model.pt2.targets.check_target`).

    Returns
    -------
    set of str
        Every node target the program calls.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
        raise Refusal(rel, "is not a serialized ExportedProgram (no graph_module)")
    _check_verifiers(rel, doc.get("verifiers", []))
    _check_guards(rel, doc.get("guards_code", []))
    _check_range_constraints(rel, doc.get("range_constraints", {}))
    walk = _ProgramWalk(rel, namespaces, extra_targets)
    walk.visit(doc, node_name=None, depth=0)
    return walk.targets


def _check_verifiers(rel: str, verifiers: Any) -> None:
    if not isinstance(verifiers, list):
        raise Refusal(rel, "has a malformed verifiers list")
    for v in verifiers:
        if v not in KNOWN_VERIFIERS:
            raise Refusal(rel, f"names verifier {quoted(v)}, which torch does not register")


def _check_guards(rel: str, guards: Any) -> None:
    if not isinstance(guards, list):
        raise Refusal(rel, "has a malformed guards_code")
    for g in guards:
        why = check_guard_code(g)
        if why:
            raise Refusal(rel, f"has guards_code {quoted(g)} that is not a plain shape guard "
                               f"({why}; ExportedProgram.module() exec()s it)")


def _check_range_constraints(rel: str, rc: Any) -> None:
    if not isinstance(rc, dict):
        raise Refusal(rel, "has malformed range_constraints")
    for k in rc:
        if check_ident(k):
            raise Refusal(rel, f"has a range constraint on {quoted(k)}, not a symbol name")


class _ProgramWalk:
    """Walks a program's JSON, checking each value by the key it sits under.

    A handler returns True when the walk should still descend into the value; the messages name
    the graph node the value belongs to, when there is one.
    """

    def __init__(self, rel: str, namespaces: frozenset[str], extra_targets: frozenset[str]):
        self.rel = rel
        self.namespaces = namespaces
        self.extra_targets = extra_targets
        self.targets: set[str] = set()
        self.handlers = {
            "target": self._target, "as_operator": self._target, "expr_str": self._expr,
            "name": self._name, "as_name": self._name, "user_input_name": self._name,
            "parameter_name": self._fqn, "buffer_name": self._fqn,
            "tensor_constant_name": self._fqn, "fqn": self._fqn,
            "forward_arg_names": self._forward_args, "in_spec": self._spec,
            "out_spec": self._spec, "treespec_namedtuple_fields": self._namedtuple_fields,
            "metadata": self._metadata,
            **{k: self._custom_obj for k in _CUSTOM_OBJ_KEYS},
            **{k: self._value_table for k in _VALUE_TABLES},
        }

    def refuse(self, reason: str) -> Refusal:
        """A Refusal naming this program's entry."""
        return Refusal(self.rel, reason)

    def visit(self, obj: Any, node_name: str | None, depth: int) -> None:
        """Check ``obj`` and everything below it; ``node_name``: the enclosing graph node."""
        if depth > _MAX_DEPTH:
            raise self.refuse("is nested too deeply")
        if isinstance(obj, list):
            for x in obj:
                self.visit(x, node_name, depth + 1)
            return
        if not isinstance(obj, dict):
            return
        if "target" in obj and "inputs" in obj and "outputs" in obj:   # a graph node
            node_name = obj.get("name") if isinstance(obj.get("name"), str) else node_name
        where = f"node {quoted(node_name)} " if node_name else ""
        for k, v in obj.items():
            handler = self.handlers.get(k)
            if (handler is None or handler(k, v, where)) and isinstance(v, (dict, list)):
                self.visit(v, node_name, depth + 1)

    def _target(self, _k: str, v: Any, where: str) -> bool:
        why = check_target(v, self.namespaces, self.extra_targets)
        if why:
            raise self.refuse(f"{where}calls {quoted(v)}, which {why}")
        self.targets.add(v)
        return True

    def _expr(self, _k: str, v: Any, where: str) -> bool:
        why = check_sympy_expr(v)
        if why:
            raise self.refuse(f"{where}has a symbolic expression {quoted(v)} that is not a "
                              f"plain shape formula ({why}; torch passes it to sympy.sympify, "
                              "i.e. eval)")
        return True

    def _name(self, k: str, v: Any, where: str) -> bool:
        why = None if v is None else check_ident(v, allow_empty=(k == "name"))
        if why:
            raise self.refuse(f"{where}has a {k} {quoted(v)} that {why}")
        return True

    def _fqn(self, k: str, v: Any, _where: str) -> bool:
        why = check_fqn(v, allow_empty=(k == "fqn"))
        if why:
            raise self.refuse(f"has a {k} {quoted(v)} that {why}")
        return True

    def _custom_obj(self, _k: str, _v: Any, where: str) -> bool:
        raise self.refuse(f"{where}uses a custom (TorchScript) object, which torch unpickles "
                          "with torch._C._pickle_load_obj")

    def _value_table(self, k: str, v: Any, _where: str) -> bool:
        if not isinstance(v, dict):
            raise self.refuse(f"has a malformed {k}")
        if k == "custom_obj_values" and v:
            raise self.refuse("declares custom (TorchScript) object values")
        for name in v:
            why = check_ident(name)
            if why:
                raise self.refuse(f"has a value name {quoted(name)} that {why}")
        return True

    def _forward_args(self, _k: str, v: Any, _where: str) -> bool:
        if v and not isinstance(v, list):   # torch writes a list (or nothing)
            raise self.refuse("has a malformed forward_arg_names")
        for name in v or []:
            why = check_ident(name)
            if why:
                raise self.refuse(f"has a forward argument name {quoted(name)} that {why}")
        return True

    def _spec(self, k: str, v: Any, _where: str) -> bool:
        why = check_treespec(v)
        if why:
            raise self.refuse(f"has an {k} that {why}")
        return False

    def _namedtuple_fields(self, _k: str, v: Any, _where: str) -> bool:
        if not isinstance(v, dict):
            raise self.refuse("has a malformed treespec_namedtuple_fields")
        for tname, fdef in v.items():
            fields = fdef.get("field_names") if isinstance(fdef, dict) else None
            if not isinstance(fields, list) or any(check_ident(f) for f in fields):
                raise self.refuse(f"has namedtuple fields for {quoted(tname)} that are not "
                                  "identifiers")
        return False

    def _metadata(self, _k: str, v: Any, where: str) -> bool:
        if not isinstance(v, dict):
            return True
        for mk, mv in v.items():
            if not isinstance(mv, str):
                raise self.refuse(f"{where}has non-string metadata {quoted(mk)}")
        self._source_fn_stack(v.get("source_fn_stack"), where)
        return False

    def _source_fn_stack(self, sfs: str | None, where: str) -> None:
        """Entries torch resolves with getattr chains from torch / torch.nn / _operator / math."""
        for item in (sfs.split(";") if sfs else ()):
            parts = item.split(",")
            if len(parts) != 2:
                raise self.refuse(f"{where}has a malformed source_fn_stack")
            tgt = parts[1]
            comps = tgt.split(".")
            if tgt.startswith(("torch", "_operator", "math")) and \
                    (any(not IDENT.match(c) for c in comps) or any(is_dunder(c) for c in comps)):
                raise self.refuse(f"{where}has a source_fn_stack entry {quoted(tgt)} that is not "
                                  "a plain dotted name")
