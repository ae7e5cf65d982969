"""Scores by hand on small cases; the rule registry is complete and refuses duplicates."""
import pkgutil

import pytest

import archscan.layers as layers
from archscan.analysis.scores import copa_index, ra_index, verdict
from archscan.layers import FAMILIES, REGISTRY, Registry, Rule


def test_copa_index_matches_definition():
    # L = 3: sum_{i<=1} round(-d_i (2 - i) / 2): round(-10) + round(-2.5) = -10 + -2 (banker's rounding)
    assert copa_index([10, 5, 99]) == -10 + round(-2.5)
    assert copa_index([0, 0, 7]) == 0
    assert copa_index([4]) == 0


def test_ra_index_carries_virtual_constraints():
    # layer 1 over-complete (n_z > n_x) gives virtual constraints to layer 2
    assert ra_index([(10, 2, 20), (30, 5, 5)]) == max(10 - 2 - 20, (30 - 5 - 5) - 10)
    assert ra_index([]) == 0


def test_verdict_thresholds():
    assert verdict(1.0) == "LEAKS" and verdict(0.5) == "PARTIAL" and verdict(0.0) == "RESISTANT"


def test_every_rule_file_is_registered():
    files = {m.name for m in pkgutil.iter_modules(layers.__path__)} - {"base"}
    assert files == {f.__name__.rsplit(".", 1)[1] for f in FAMILIES}


def test_registering_twice_raises():
    reg = Registry()
    rule = Rule("x", "t", "bijective")
    reg.register(rule)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(rule)
    assert "conv2d" in REGISTRY.rules and "relu" in REGISTRY.rules
