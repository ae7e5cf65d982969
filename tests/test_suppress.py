"""--select/--ignore and `# archscan: ignore[...]` comments: findings hidden and counted, the
verdict and the gate untouched."""
import json

import pytest

from archscan.cli.main import main
from archscan.errors import InputError
from archscan.report.suppress import apply, comment_ids, parse_ids

NET = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 3){comment}
    def forward(self, x):
        return self.fc(x.flatten(1))
'''
ARGS = ["--input-shape", "3,4,4", "--local", "off", "--format", "json", "--fail-on", "leaks", "--exit-zero"]


def _scan(tmp_path, capsys, comment="", extra=()):
    (tmp_path / "net.py").write_text(NET.format(comment=comment))
    assert main(["scan", str(tmp_path / "net.py") + ":Net", *ARGS, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_ids_and_prefixes_are_checked_against_the_catalogue():
    assert parse_ids("AS001, as02", "--select") == ("AS001", "AS02")
    assert parse_ids(["AS030"], "ignore") == ("AS030",)
    with pytest.raises(InputError, match="--ignore XX1: no finding id starts with it"):
        parse_ids("XX1", "--ignore")


def test_ignore_hides_and_counts_but_keeps_the_verdict_and_the_gate(tmp_path, capsys):
    plain = _scan(tmp_path, capsys)
    ids = {f["rule_id"] for f in plain["findings"]}
    assert "AS001" in ids and plain["scores"]["verdict"] == "LEAKS" and not plain["gate"]["passed"]
    quiet = _scan(tmp_path, capsys, extra=["--ignore", "AS001"])
    assert "AS001" not in {f["rule_id"] for f in quiet["findings"]}
    assert [f["suppressed_by"] for f in quiet["suppressed"] if f["rule_id"] == "AS001"] == ["--ignore"]
    assert quiet["scores"] == plain["scores"] and quiet["gate"]["passed"] is False
    only = _scan(tmp_path, capsys, extra=["--select", "AS001"])
    assert {f["rule_id"] for f in only["findings"]} == {"AS001"}
    assert len(only["suppressed"]) == len(plain["findings"]) - 1


def test_a_comment_on_the_layer_line_suppresses_that_layer(tmp_path, capsys):
    plain = _scan(tmp_path, capsys)
    on_fc = {f["rule_id"] for f in plain["findings"] if f.get("layer") == "fc" and f.get("source")}
    assert on_fc
    target = sorted(on_fc)[0]
    report = _scan(tmp_path, capsys, comment=f"  # archscan: ignore[{target}]")
    assert target not in {f["rule_id"] for f in report["findings"] if f.get("layer") == "fc"}
    assert {f["suppressed_by"] for f in report["suppressed"]} == {"comment"}
    every = _scan(tmp_path, capsys, comment="  # archscan: ignore")
    assert not [f for f in every["findings"] if f.get("source") and f["source"].endswith(":9")]


def test_sarif_keeps_suppressed_findings_marked(tmp_path, capsys):
    (tmp_path / "net.py").write_text(NET.format(comment="  # archscan: ignore[AS002]"))
    out = tmp_path / "r.sarif"
    main(["scan", str(tmp_path / "net.py") + ":Net", *ARGS, "--ignore", "AS030", "--format", f"sarif:{out}"])
    results = json.loads(out.read_text())["runs"][0]["results"]
    kinds = {r["ruleId"]: r["suppressions"][0]["kind"] for r in results if "suppressions" in r}
    assert kinds == {"AS002": "inSource", "AS030": "external"}
    assert any(r["ruleId"] == "AS001" and "suppressions" not in r for r in results)


def test_comment_parsing(tmp_path):
    f = tmp_path / "a.py"
    f.write_text("x = 1  # archscan: ignore[AS001, AS003]\ny = 2\nz = 3  # ARCHSCAN: IGNORE\n")
    assert comment_ids(f"{f}:1") == {"AS001", "AS003"}
    assert comment_ids(f"{f}:2") == frozenset() and comment_ids(f"{f}:3") == {"*"}
    assert comment_ids(f"{f}:99") == frozenset() and comment_ids(None) == frozenset()


def test_text_output_says_how_many_were_suppressed(tmp_path, capsys):
    (tmp_path / "net.py").write_text(NET.format(comment=""))
    main(["scan", str(tmp_path / "net.py") + ":Net", "--input-shape", "3,4,4", "--local", "off", "--ignore", "AS0"])
    assert "suppressed by --ignore" in capsys.readouterr().out


def test_apply_is_a_no_op_without_suppressions(monkeypatch):
    from archscan_reports import ROOT, zoo_report
    monkeypatch.chdir(ROOT)
    report = zoo_report("cnn_c4", local="off")
    out = apply(report)
    assert out.findings == report.findings and out.findings and out.suppressed == ()
    assert report.suppressed is None                      # a new record; the scan's own is untouched
    hidden = apply(report, ignore=("AS001",))
    assert [f.suppressed_by for f in hidden.suppressed] == ["--ignore"] and len(hidden.findings) == len(out.findings) - 1
