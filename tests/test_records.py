"""The typed report: every stage after the pipeline reads records; the JSON edge writes them
(``to_dict``) and reads them back (``from_dict``) without loss; a stored baseline the gate cannot
read is refused with one line; every kind of report renders through the one formatter registry."""
import dataclasses
import io
import json

import pytest
from archscan_reports import ROOT, zoo_report

from archscan.cli.main import FORMATS, build_parser
from archscan.errors import InputError
from archscan.formatters import REGISTRY, formats, kind_of, render
from archscan.report.compare import Comparison, comparison
from archscan.report.gate import Policy, baseline_report, evaluate
from archscan.report.jsonable import MissingField
from archscan.report.records import LayerRecord, ScanReport
from archscan.terms import Determination, Verdict, ViewStatus

# the optimisation view not needed (cnn_c4), run (cnn_relu, its spectrum details), off (cnn_narrow)
CASES = [("cnn_c4", {}), ("cnn_relu", {}), ("cnn_narrow", {"local": "off"}), ("mlp2", {"local": "off"})]


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("name, options", CASES)
def test_a_report_reads_back_from_its_json_unchanged(name, options):
    report = zoo_report(name, **options)
    text = json.dumps(report.to_dict())
    back = ScanReport.from_dict(json.loads(text))
    assert back == report                                   # the records themselves, field by field
    assert json.dumps(back.to_dict()) == text
    assert isinstance(back.layers[0], LayerRecord) and isinstance(back.scores.verdict, Verdict)
    assert isinstance(back.layers[0].status, Determination) and isinstance(back.scores.optimisation.status, ViewStatus)


def test_the_optimisation_views_figures_and_details_survive():
    opt = zoo_report("cnn_relu").scores.optimisation
    assert opt.status == ViewStatus.RAN and opt.leakage_score is not None and "time_cap_s" in opt.details
    off = zoo_report("cnn_narrow", local="off").to_dict()["scores"]["optimisation"]
    assert "leakage_score" not in off and off["status"] == "off"      # no figures when the view did not run


def test_gate_and_suggestions_go_out_but_are_not_read_back():
    report = zoo_report("cnn_c4")
    gated = report.with_(gate=evaluate(report, Policy(fail_on="leaks")))
    d = gated.to_dict()
    assert d["gate"]["passed"] is False and list(d)[-1] == "gate"
    assert ScanReport.from_dict(d).gate is None and ScanReport.from_dict(d) == report


def test_a_baseline_missing_what_the_gate_reads_is_refused():
    d = zoo_report("cnn_c4").to_dict()
    assert baseline_report(d, "base.json").scores.verdict == "LEAKS"
    older = {k: v for k, v in d.items() if k not in ("coverage", "nodes")}     # blocks the gate does not read
    assert baseline_report(older, "base.json").layers
    for cut in ("scores", "layers"):
        with pytest.raises(InputError, match="base.json"):
            baseline_report({k: v for k, v in d.items() if k != cut}, "base.json")
    with pytest.raises(MissingField, match="scores.verdict"):
        ScanReport.from_dict({**d, "scores": {k: v for k, v in d["scores"].items() if k != "verdict"}})


def test_records_are_frozen():
    report = zoo_report("cnn_c4")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.scores.verdict = "RESISTANT"


def test_comparison_reads_back_from_its_json():
    cmp = comparison([zoo_report("cnn_c4"), zoo_report("cnn_narrow")])
    assert Comparison.from_dict(json.loads(json.dumps(cmp.to_dict()))) == cmp


def test_one_registry_renders_every_kind_of_report():
    scan, cmp = zoo_report("cnn_c4"), comparison([zoo_report("cnn_c4"), zoo_report("cnn_narrow")])
    validation = {"kind": "validation", "model": "m.py:x"}
    assert [kind_of(r) for r in (scan, cmp, validation)] == ["scan", "compare", "validate"]
    for report in (scan, cmp):
        for fmt in formats(kind_of(report)):
            buf = io.StringIO()
            render(report, fmt, buf)
            assert buf.getvalue().strip(), (kind_of(report), fmt)
    with pytest.raises(ValueError, match="compare format 'sarif'"):
        render(cmp, "sarif", io.StringIO())


def _choices(command: str) -> tuple:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if a.dest == "format").choices)


def test_the_command_lines_formats_are_the_registrys():
    assert _choices("compare") == formats("compare") and _choices("validate") == formats("validate")
    assert set(REGISTRY) == {"scan", "compare", "validate"} and FORMATS == formats("scan")
