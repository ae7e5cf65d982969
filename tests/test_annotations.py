"""The CI annotation formats: GitHub workflow commands and GitLab Code Quality, at the same
locations as SARIF."""
import io
import json
import re

import pytest
from archscan_reports import ROOT

from archscan.config import ScanOptions
from archscan.formatters import render
from archscan.formatters.annotations import _escape_data, _escape_property
from archscan.formatters.sarif import sarif_log
from archscan.pipeline import scan

COMMAND = re.compile(r"^::(error|warning|notice) (file=[^,]+,line=\d+,)?title=[^:]+::[^\n]+$")


@pytest.fixture(scope="module")
def leaky():
    return scan(str(ROOT / "examples" / "paper_zoo.py") + ":mlp2", ScanOptions(input_shape=(3, 32, 32), local="off"))


def _out(report, fmt) -> str:
    buf = io.StringIO()
    render(report, fmt, buf)
    return buf.getvalue()


def test_github_commands_are_well_formed_and_match_sarif(leaky):
    lines = _out(leaky, "github").splitlines()
    assert all(COMMAND.match(l) for l in lines), lines
    results = sarif_log(leaky)["runs"][0]["results"]
    assert len(lines) == len(results) + 1 and lines[-1].startswith("::notice title=archscan verdict::")
    for line, res in zip(lines, results):
        loc = res["locations"][0]["physicalLocation"]
        assert f"line={loc['region']['startLine']}," in line and f"title=archscan {res['ruleId']}::" in line
    assert any(l.startswith("::error ") for l in lines)   # a leaking model's AS001 is an error


def test_github_escapes_what_would_break_a_command():
    assert _escape_data("50%\nnext") == "50%25%0Anext"
    assert _escape_property("a:b,c") == "a%3Ab%2Cc"


def test_gitlab_code_quality_fields(leaky):
    items = json.loads(_out(leaky, "gitlab"))
    assert items and {"description", "check_name", "fingerprint", "severity", "location"} <= set(items[0])
    assert {i["severity"] for i in items} <= {"info", "minor", "major", "critical", "blocker"}
    assert "critical" in {i["severity"] for i in items}
    assert len({i["fingerprint"] for i in items}) == len(items)
    assert all(isinstance(i["location"]["lines"]["begin"], int) and i["location"]["path"] for i in items)
