"""Findings and failed gate checks where CI systems show them in the diff: GitHub Actions workflow
commands (``github``: ``::error file=…,line=…,title=…::message``) and GitLab's Code Quality report
(``gitlab``: a JSON list).  Both read the same items and locations as SARIF, so a finding sits on
the same line in every format."""
from __future__ import annotations

import json
from urllib.parse import unquote

from archscan.formatters.sarif import finding_items, fingerprint, location
from archscan.report.records import ScanReport

GITHUB_LEVEL = {"error": "error", "warning": "warning", "note": "notice"}
GITLAB_SEVERITY = {"error": "critical", "warning": "major", "note": "info"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _path(uri: str) -> str:
    return unquote(uri.removeprefix("file://"))


def _message(item: dict) -> str:
    layer = item["layer"]
    return item["message"] + (f" (layer {layer})" if layer and layer not in item["message"] else "")


def render_github(report: ScanReport, stream) -> None:
    """One workflow command per item, then a notice with the verdict (what the job log shows)."""
    for item in finding_items(report):
        uri, line = location(report, item["source"])
        props = f"file={_escape_property(_path(uri))},line={line},title={_escape_property('archscan ' + item['rule_id'])}"
        stream.write(f"::{GITHUB_LEVEL.get(item['level'], 'warning')} {props}::{_escape_data(_message(item))}\n")
    s = report.scores
    stream.write(f"::notice title=archscan verdict::{_escape_data(report.model.spec)}: {s.verdict}, "
                 f"leakage score {s.leakage_score:.3f}, predicted PSNR {s.predicted_psnr:.1f} dB\n")


def render_gitlab(report: ScanReport, stream) -> None:
    """GitLab Code Quality: ``[{description, check_name, fingerprint, severity, location}]``."""
    out = []
    for item in finding_items(report):
        uri, line = location(report, item["source"])
        out.append({"description": _message(item), "check_name": item["rule_id"],
                    "fingerprint": fingerprint(report, item), "severity": GITLAB_SEVERITY.get(item["level"], "minor"),
                    "location": {"path": _path(uri), "lines": {"begin": line}}})
    json.dump(out, stream, indent=2)
    stream.write("\n")
