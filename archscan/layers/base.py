"""The rule record and the registry: one rule per layer kind, matched on module type, function,
tensor method or aten op.  A rule turns a traced op into a normalised kind with plain-Python
parameters and says how knowledge flows through it (its ``flow``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# How a kind passes knowledge of values and gradients (used by analysis/propagate.py):
FLOWS = (
    "parametric",    # Linear / Conv2d: builds a linear system about its input
    "invertible",    # elementwise, invertible, derivative a function of the output
    "relu",          # forward rows only where active; derivative from the output's sign
    "ambiguous",     # GELU/SiLU: two pre-images; assumed resolved (attacker-favourable)
    "bijective",     # reshapes, identity, eval-mode BatchNorm: values and gradients pass
    "dropout",       # identity at eval; at train an unknown mask (assumed known: conservative)
    "pool",          # many-to-one: the input is partly known from the output
    "norm_train",    # train-mode BatchNorm: two unknown statistics per channel
    "add",           # residual sum
    "cat",           # concatenation
    "ignore",        # produces no tensor the attack needs (shape queries, output marker)
)


@dataclass(frozen=True)
class Rule:
    """How archscan treats one layer kind.  ``params(module, args, kwargs)`` returns plain data."""

    kind: str
    family: str
    flow: str
    modules: tuple = ()
    functions: tuple = ()
    methods: tuple = ()
    aten: tuple = ()
    params: Callable | None = None
    why: str = ""

    def __post_init__(self):
        if self.flow not in FLOWS:
            raise ValueError(f"rule {self.kind}: unknown flow {self.flow!r}")

    def extract(self, module, args, kwargs) -> dict:
        return dict(self.params(module, args, kwargs)) if self.params else {}


@dataclass
class Registry:
    rules: dict = field(default_factory=dict)

    def register(self, rule: Rule) -> None:
        if rule.kind in self.rules:
            raise ValueError(f"layer rule {rule.kind!r} registered twice")
        self.rules[rule.kind] = rule

    def for_module(self, module):
        for rule in self.rules.values():
            if rule.modules and isinstance(module, rule.modules):
                return rule
        return None

    def for_function(self, fn):
        for rule in self.rules.values():
            if fn in rule.functions:
                return rule
        return None

    def for_method(self, name: str):
        for rule in self.rules.values():
            if name in rule.methods:
                return rule
        return None

    def for_aten(self, name: str):
        for rule in self.rules.values():
            if any(name == a or name.startswith(a + ".") for a in rule.aten):
                return rule
        return None


def arg(args, kwargs, i, name, default=None):
    """Positional-or-keyword argument ``name`` at position ``i``."""
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))
