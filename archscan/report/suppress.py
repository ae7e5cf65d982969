"""Linter conventions over a report's findings: ``--select``/``--ignore`` of finding ids (a prefix
such as ``AS00`` selects a family) and a per-layer ``# archscan: ignore[AS003]`` comment on the
layer's source line (``# archscan: ignore`` alone silences every finding there).

A suppression hides a finding from every format and is counted in ``report.suppressed``; it never
changes the verdict, the scores or the gate -- a leaking model still leaks.  To accept a known state
in CI, store a ``--baseline``.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from archscan.errors import InputError
from archscan.report.catalogue import RULES
from archscan.report.records import Finding, ScanReport

_COMMENT = re.compile(r"#\s*archscan:\s*ignore(?:\[([A-Z0-9,\s]+)\])?", re.IGNORECASE)


def parse_ids(value, where: str) -> tuple[str, ...]:
    """``"AS001,AS003"`` or ``["AS001", "AS00"]`` -> ids or id prefixes, each checked against the catalogue."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    ids = tuple(str(i).strip().upper() for i in items if str(i).strip())
    for i in ids:
        if not any(r.startswith(i) for r in RULES):
            raise InputError(f"{where} {i}: no finding id starts with it (ids: {', '.join(sorted(RULES))})")
    return ids


def apply(report: ScanReport, select: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> ScanReport:
    """The report with its suppressed findings moved from ``findings`` to ``suppressed`` (each with
    what suppressed it)."""
    kept, hidden = [], []
    for f in report.findings:
        why = _why(f, select, ignore)
        (hidden if why else kept).append(replace(f, suppressed_by=why) if why else f)
    return report.with_(findings=tuple(kept), suppressed=tuple(hidden))


def _why(finding: Finding, select, ignore) -> str | None:
    rid = finding.rule_id
    if select and not any(rid.startswith(s) for s in select):
        return "--select"
    if any(rid.startswith(i) for i in ignore):
        return "--ignore"
    ids = comment_ids(finding.source)
    if rid in ids or "*" in ids:
        return "comment"
    return None


def comment_ids(source: str | None) -> frozenset:
    """The ids an ``# archscan: ignore[...]`` comment names on ``file:line`` ('*': all of them)."""
    if not source:
        return frozenset()
    path, _, line = source.rpartition(":")
    if not line.isdigit():
        return frozenset()
    lines = _lines(path)
    text = lines[int(line) - 1] if 0 < int(line) <= len(lines) else ""
    found = _COMMENT.search(text)
    if not found:
        return frozenset()
    return frozenset(i.strip().upper() for i in found.group(1).split(",")) if found.group(1) else frozenset("*")


def _lines(path: str) -> tuple[str, ...]:
    try:
        return tuple(Path(path).read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        return ()
