"""The layer families: every family file is listed here explicitly (a test checks none is missing).

A family file holds its ``KINDS``: how each kind of op is matched in a traced graph, its parameters,
its flow of knowledge (``flow.py``) and, for parametric kinds, the geometry of its system.
"""
from archscan.layers import activation, attention, conv, hard, linear, merge, norm, pool, resample, select, shape
from archscan.layers.base import LayerKind, Registry

FAMILIES = (linear, conv, activation, hard, norm, pool, resample, shape, select, merge, attention)

REGISTRY = Registry()
for _family in FAMILIES:
    for _kind in _family.KINDS:
        REGISTRY.register(_kind)

__all__ = ["FAMILIES", "REGISTRY", "LayerKind", "Registry"]
