"""The layer-kind record and the registry.  A family file lists its ``KINDS``: each matches traced
ops by module type, function, tensor method or aten name (in-place spellings such as ``relu_``,
``add_`` and ``aten.relu_.default`` are the same kind), turns one into plain-Python parameters,
declares how knowledge flows through it (a ``flow.Flow``) and, for parametric kinds, the geometry
its system is built from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from archscan.layers.flow import Flow


@dataclass(frozen=True)
class LayerKind:
    """How archscan treats one kind of op.  ``params(module, args, kwargs)`` returns plain data;
    ``geometry(node)`` (parametric kinds) the ``archscan_kernels.ConvGeometry`` of its system."""

    kind: str
    family: str
    flow: Flow
    modules: tuple = ()
    functions: tuple = ()
    methods: tuple = ()
    aten: tuple = ()
    params: Callable | None = None
    why: str = ""
    geometry: Callable | None = None       # node -> ConvGeometry of its system (parametric kinds)
    leak_source: Callable | None = None    # (node, geometry) -> its input leaks on its own (Linear + bias)
    gradient_layout: Callable | None = None  # (output gradient array, geometry) -> F x Ho x Wo
    weight_params: Callable | None = None  # weight shape -> params, for functional calls (F.conv2d, aten ...)
    # The closed-form attacks' step for this kind (validate/attacks/vocabulary.py): (op, parameter
    # names read from ``params``), or None with ``attack_why`` when they cannot step through it.
    attack: tuple | None = None
    attack_why: str = ""
    # functions and module classes of packages archscan does not import (torchvision, timm), by
    # their qualified name "package.module.name"
    named: tuple = ()
    # the kind that classifies the op when this kind's ``params`` refuses it (one spelling, two
    # meanings: ``a @ W`` with W a parameter is a Linear, ``q @ k`` of two activations is not)
    otherwise: str = ""

    def __post_init__(self):
        if not isinstance(self.flow, Flow):
            raise TypeError(f"layer kind {self.kind}: flow must be a layers.flow.Flow, got {self.flow!r}")
        if self.flow.parametric and self.geometry is None:
            raise TypeError(f"layer kind {self.kind}: a parametric kind needs a geometry")

    def leaks_input(self, node, geom) -> bool:
        return bool(self.leak_source and self.leak_source(node, geom))

    def output_gradient(self, grad, geom):
        """The captured output gradient in the (F, Ho, Wo) layout of the system's gradient rows."""
        g = self.gradient_layout(grad, geom) if self.gradient_layout else grad
        return g.reshape(geom.F, geom.Ho, geom.Wo)

    def extract(self, module, args, kwargs) -> dict:
        return dict(self.params(module, args, kwargs)) if self.params else {}


def canonical(name: str) -> str:
    """``relu_`` -> ``relu``, ``aten.add_.Tensor`` -> ``aten.add``: in-place ops are their kind."""
    if name.startswith("aten."):
        name = ".".join(name.split(".")[:2])
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


@dataclass
class Registry:
    kinds: dict = field(default_factory=dict)

    def register(self, kind: LayerKind) -> None:
        if kind.kind in self.kinds:
            raise ValueError(f"layer kind {kind.kind!r} registered twice")
        self.kinds[kind.kind] = kind

    def __getitem__(self, kind: str) -> LayerKind:
        return self.kinds[kind]

    def for_module(self, module):
        found = next((k for k in self.kinds.values() if k.modules and isinstance(module, k.modules)), None)
        return found or self._named(f"{c.__module__}.{c.__qualname__}" for c in type(module).__mro__)

    def for_function(self, fn):
        found = next((k for k in self.kinds.values() if fn in k.functions), None)
        return found or self._named([f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}"])

    def _named(self, names) -> LayerKind | None:
        names = list(names)
        return next((k for k in self.kinds.values() if any(n in k.named for n in names)), None)

    def for_method(self, name: str):
        name = canonical(name)
        return next((k for k in self.kinds.values() if name in k.methods), None)

    def for_aten(self, name: str):
        name = canonical(name)
        return next((k for k in self.kinds.values() if name in k.aten), None)


def arg(args, kwargs, i, name, default=None):
    """Positional-or-keyword argument ``name`` at position ``i``."""
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def traced_shape(node) -> tuple | None:
    """The shape an fx or export node's tensor had in the trace (``tensor_meta`` from shape
    propagation, or the fake ``val`` of a program); None for anything that is not one tensor."""
    meta = getattr(node, "meta", None)
    if not meta:
        return None
    tm = meta.get("tensor_meta")
    if tm is not None and hasattr(tm, "shape"):
        return tuple(int(s) for s in tm.shape)
    val = meta.get("val")
    return tuple(int(s) for s in val.shape) if isinstance(val, torch.Tensor) else None


_TRANSPOSES = {"t", "transpose", "permute", "numpy_T", "T"}


def _op_name(target) -> str:
    name = getattr(target, "__name__", None) or str(target)
    return name.split(".")[1] if name.startswith("aten.") else name


def is_parameter(node) -> bool:
    """A learned tensor: a get_attr (fx), a parameter placeholder (export names them p_*), or a
    transpose of one."""
    op = getattr(node, "op", None)
    if op == "get_attr":
        return True
    if op == "placeholder":
        return str(node.name).startswith("p_")
    if op in ("call_method", "call_function") and _op_name(node.target) in _TRANSPOSES and node.args:
        return is_parameter(node.args[0])
    return False
