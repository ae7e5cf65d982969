"""The layer-rule registry: every rule file is listed here explicitly (tests check none is missing)."""
from archscan.layers import activation, conv, linear, merge, norm, pool, shape
from archscan.layers.base import FLOWS, Registry, Rule

FAMILIES = (linear, conv, activation, norm, pool, shape, merge)

REGISTRY = Registry()
for _family in FAMILIES:
    for _rule in _family.RULES:
        REGISTRY.register(_rule)

__all__ = ["FAMILIES", "FLOWS", "REGISTRY", "Registry", "Rule"]
