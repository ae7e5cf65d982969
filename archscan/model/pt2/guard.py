"""The runtime guard: while torch deserializes an archive, every path to running code is shut.

The data-only inspection decides whether an archive is loaded at all; this guard is the second
line, in case torch reaches an unpickler, a native library or an ``eval`` the inspection did not
foresee (a future torch, a path not modelled).  It patches torch process-wide for the duration
of one load, so loads are serialized by a lock.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

import torch

from archscan.model.pt2.capture import quiet
from archscan.model.pt2.errors import PICKLE_WHY, Refusal, quoted
from archscan.model.pt2.expressions import check_sympy_expr
from archscan.model.pt2.names import check_fqn, check_ident

#: torch.load as it was when archscan was imported, before any guard replaced it
ORIGINAL_TORCH_LOAD = torch.load
GUARD_LOCK = threading.RLock()


@contextlib.contextmanager
def strict_safe_globals() -> Iterator[None]:
    """Temporarily remove every globals allow-listed for weights_only loads, process-wide.

    Other code in the process may have called ``torch.serialization.add_safe_globals``; an
    archive must not be able to use those classes either.
    """
    ser = torch.serialization
    if not (hasattr(ser, "get_safe_globals") and hasattr(ser, "clear_safe_globals")):
        yield
        return
    saved = list(ser.get_safe_globals())
    ser.clear_safe_globals()
    try:
        yield
    finally:
        ser.clear_safe_globals()
        if saved:
            ser.add_safe_globals(saved)


class Guard:
    """The replacements torch sees while guarded; records every refusal they raise.

    torch catches and re-wraps many exceptions (and sometimes carries on), so a refusal is
    recorded here when it is raised, and the loader reports the first one whatever torch did.
    """

    def __init__(self):
        self.refusals: list[Refusal] = []

    def refuse(self, entry: str | None, reason: str) -> Refusal:
        """Record a refusal and return it, to be raised."""
        r = Refusal(entry, reason)
        self.refusals.append(r)
        return r

    def torch_load(self, f, map_location=None, pickle_module=None, *, weights_only=None,
                   mmap=None, **kw):
        """torch.load with weights_only forced on (so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot
        turn it off) and no custom pickle module."""
        if weights_only is False:
            raise self.refuse(None, f"asks torch to torch.load(weights_only=False) {PICKLE_WHY}")
        if pickle_module is not None:
            raise self.refuse(None, "asks torch to torch.load with a custom pickle_module")
        return ORIGINAL_TORCH_LOAD(f, map_location=map_location, weights_only=True, mmap=mmap,
                                   **kw)

    def deny_custom_object(self, *_a, **_k):
        """Stands in for torch._C._pickle_load_obj."""
        raise self.refuse(None, "asks torch to unpickle a custom (TorchScript) object with "
                                "torch._C._pickle_load_obj")

    def deny_aoti(self, *_a, **_k):
        """Stands in for the AOTInductor package loaders."""
        raise self.refuse(None, "asks torch to load an AOTInductor shared library")

    def deny_legacy(self, *_a, **_k):
        """Stands in for the legacy (pre-2.7) deserializer."""
        raise self.refuse(None, "asks torch to use the legacy (pre-2.7) deserializer, which "
                                f"uses torch.load(weights_only=False) {PICKLE_WHY}")

    def checked_sympify(self, real: Callable) -> Callable:
        """``sympy.sympify`` that checks string arguments with check_sympy_expr first."""
        def sympify(a, *args, **kwargs):
            if isinstance(a, str):
                why = check_sympy_expr(a)
                if why:
                    raise self.refuse(None, f"asks sympy to evaluate {quoted(a)} ({why})")
            return real(a, *args, **kwargs)
        return sympify

    def checked_python_code(self, real: Callable) -> Callable:
        """``Graph.python_code`` that first checks the names it would paste into source."""
        def python_code(graph, *args, **kwargs):
            self._check_graph_names(graph)
            return real(graph, *args, **kwargs)
        return python_code

    def _check_graph_names(self, graph) -> None:
        for n in graph.nodes:
            if check_ident(n.name):
                raise self.refuse(None, f"gives a graph node the name {quoted(n.name)}, which "
                                        "torch would paste into generated Python code")
            if n.op == "placeholder" and check_ident(n.target):
                raise self.refuse(None, f"gives a graph input the name {quoted(n.target)}, "
                                        "which torch would paste into generated Python code")
            if n.op in ("get_attr", "call_module") and check_fqn(n.target):
                raise self.refuse(None, f"gives a graph attribute the path {quoted(n.target)}, "
                                        "which torch would paste into generated Python code")


class _NoPickle:
    """Stands in for the ``pickle`` module inside torch.export.pt2_archive._package."""

    def __init__(self, guard: Guard, real):
        self._guard = guard
        self._real = real

    def _deny(self, *_a, **_k):
        raise self._guard.refuse(None, f"asks torch to pickle.loads an opaque object {PICKLE_WHY}")

    loads = load = Unpickler = _deny

    def __getattr__(self, name):  # dumps, HIGHEST_PROTOCOL, ...
        return getattr(self._real, name)


def _replacements(guard: Guard) -> list[tuple[Any, str, Any]]:
    """(object, attribute, replacement) for every patch the guard makes."""
    import sympy
    import torch.fx.graph as fx_graph
    from torch._export.serde import serialize as serde
    from torch.export.pt2_archive import _package

    out = [(torch, "load", guard.torch_load), (torch.serialization, "load", guard.torch_load),
           (torch._C, "_pickle_load_obj", guard.deny_custom_object),
           (_package, "pickle", _NoPickle(guard, _package.pickle)),
           (_package, "_load_aoti", guard.deny_aoti)]
    aoti = getattr(torch._C, "_aoti", None)
    if aoti is not None:
        out.append((aoti, "AOTIModelPackageLoader", guard.deny_aoti))
    out += [(serde, "deserialize", guard.deny_legacy),
            (sympy, "sympify", guard.checked_sympify(sympy.sympify)),
            (fx_graph.Graph, "python_code", guard.checked_python_code(fx_graph.Graph.python_code))]
    return out


@contextlib.contextmanager
def _patched(replacements: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Set each attribute that exists to its replacement; put every original back after."""
    saved = []
    try:
        for obj, name, value in replacements:
            if hasattr(obj, name):
                saved.append((obj, name, getattr(obj, name)))
                setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


@contextlib.contextmanager
def torch_load_guard(sink: list[str] | None = None, capture_fd: bool = True) -> Iterator[Guard]:
    """While active, torch cannot unpickle arbitrary objects or load AOTInductor libraries.

    * ``torch.load`` / ``torch.serialization.load``: ``weights_only=False`` raises; ``None``
      becomes ``True``; ``pickle_module`` is refused; the weights_only allow-list is emptied.
    * ``pickle`` as seen by torch.export.pt2_archive._package, ``torch._C._pickle_load_obj``,
      ``_package._load_aoti`` / ``AOTIModelPackageLoader`` and the legacy-format deserializer
      raise.
    * ``sympy.sympify`` of a string checks it with check_sympy_expr first.
    * ``torch.fx.Graph.python_code`` refuses node names / placeholder / get_attr targets that
      are not plain identifiers (they are pasted into the generated source).
    * torch logging, warnings and stderr (Python and file descriptor 2) go to ``sink``.

    Parameters
    ----------
    sink : list of str, optional
        Receives what torch logged, warned and printed.
    capture_fd : bool
        Also capture file descriptor 2.

    Yields
    ------
    Guard
        Refusals raised inside torch are recorded on it even if torch catches them.

    Notes
    -----
    The patches are process-wide, so the guard holds a lock; do not run other torch work in
    other threads meanwhile.
    """
    guard = Guard()
    with GUARD_LOCK, quiet(sink, capture_fd=capture_fd), strict_safe_globals():
        with _patched(_replacements(guard)):
            yield guard
