"""Scores by hand on small cases; the rule registry is complete and refuses duplicates."""
import pkgutil

import pytest

import archscan.layers as layers
from archscan.analysis.scores import copa_index, ra_index
from archscan.analysis.verdict import verdict_of as verdict
from archscan.layers import FAMILIES, REGISTRY, LayerKind, Registry
from archscan.layers.base import canonical
from archscan.layers.flow import BIJECTIVE, PARAMETRIC, Flow


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
    files = {m.name for m in pkgutil.iter_modules(layers.__path__)} - {"base", "flow"}
    assert files == {f.__name__.rsplit(".", 1)[1] for f in FAMILIES}


def test_registering_twice_raises():
    reg = Registry()
    kind = LayerKind("x", "t", BIJECTIVE)
    reg.register(kind)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(kind)
    assert "conv2d" in REGISTRY.kinds and "relu" in REGISTRY.kinds


def test_a_kind_declares_a_flow_object_and_parametric_kinds_a_geometry():
    with pytest.raises(TypeError, match="flow must be"):
        LayerKind("x", "t", "bijective")
    with pytest.raises(TypeError, match="needs a geometry"):
        LayerKind("y", "t", PARAMETRIC)
    assert all(isinstance(k.flow, Flow) for k in REGISTRY.kinds.values())
    assert all(k.geometry is not None for k in REGISTRY.kinds.values() if k.flow.parametric)


@pytest.mark.parametrize("spelling, kind", [("relu_", "relu"), ("add_", "add"), ("aten.relu_.default", "aten.relu"),
                                            ("aten.add_.Tensor", "aten.add"), ("aten.conv2d.default", "aten.conv2d"),
                                            ("__iadd__", "__iadd__")])
def test_in_place_spellings_are_their_kind(spelling, kind):
    assert canonical(spelling) == kind


def test_in_place_ops_match_the_same_kind():
    assert REGISTRY.for_aten("aten.relu_.default").kind == "relu"
    assert REGISTRY.for_aten("aten.hardtanh_.default").kind == "relu6"
    assert REGISTRY.for_method("add_").kind == "add" and REGISTRY.for_method("relu_").kind == "relu"


def _instances(kind):
    """Default-constructed modules of a kind (those that take no required arguments)."""
    out = []
    for cls in kind.modules:
        try:
            out.append(cls())
        except TypeError:
            continue
    return out


def test_scan_and_the_attacks_share_one_vocabulary():
    """Every kind says how the closed-form attacks treat it, and the attacks do exactly that."""
    from archscan.validate.attacks.vocabulary import module_step
    from archscan.validate.attacks.steps import Step
    checked = 0
    for kind in REGISTRY.kinds.values():
        if kind.flow.name in ("ignore",):
            continue
        assert kind.attack is not None or kind.attack_why, kind.kind
        for module in _instances(kind):
            step = module_step("m", module.eval())
            if kind.attack is None:
                assert isinstance(step, str) and kind.kind in step, (kind.kind, step)
            else:
                assert isinstance(step, Step), (kind.kind, step)
                assert step.kind == ("act" if kind.attack[0] not in ("reshape", "linear", "conv") else kind.attack[0])
            checked += 1
    assert checked >= 15


def test_docs_rules_md_is_the_catalogue():
    from pathlib import Path
    from archscan.report.catalogue import rules_document
    path = Path(__file__).resolve().parents[1] / "docs" / "rules.md"
    assert path.read_text(encoding="utf-8") == rules_document(), \
        "regenerate: python -c 'from archscan.report.catalogue import rules_document as d; open(\"docs/rules.md\",\"w\").write(d())'"


def test_archscan_rule_explains_one_id_or_lists_them(capsys):
    from archscan.cli.main import main
    from archscan.report.catalogue import RULES
    assert main(["rule"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(RULES)
    assert main(["rule", "as003"]) == 0
    assert capsys.readouterr().out.startswith("## AS003 layer-input-determined")
    assert main(["rule", "AS999"]) == 2
