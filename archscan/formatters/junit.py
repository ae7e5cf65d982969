"""JUnit XML: one testcase per gate check (classname ``archscan.gate``) and per layer
(``archscan.layers``).  A layer fails when a failed check names it; otherwise its system-out says
what the attacker gets there.  Without a gate only the layers are listed, all passing."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from archscan.report.records import Check, LayerRecord, ScanReport


def render(report: ScanReport, stream) -> None:
    root = ET.Element("testsuites", name="archscan")
    suite = _suite(report)
    root.append(suite)
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key))
    ET.indent(root)
    stream.write('<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def _suite(report: ScanReport) -> ET.Element:
    checks = report.gate.checks if report.gate is not None else ()
    cases = [_check_case(c) for c in checks]
    blamed = _blamed(checks)
    cases += [_layer_case(report, l, blamed.get(l.name)) for l in report.layers]
    failures = sum(1 for c in cases if c.find("failure") is not None)
    suite = ET.Element("testsuite", name=f"archscan {report.model.spec}", tests=str(len(cases)),
                       failures=str(failures), errors="0", skipped="0",
                       time=_seconds(report.timing.get("total_s", 0)))
    if report.created:
        suite.set("timestamp", report.created)
    suite.append(_properties(report))
    suite.extend(cases)
    return suite


def _properties(report: ScanReport) -> ET.Element:
    s, props = report.scores, ET.Element("properties")
    values = {"model": report.model.spec, "verdict": s.verdict, "leakage_score": s.leakage_score,
              "copa_index": s.copa_index, "predicted_psnr": s.predicted_psnr,
              "archscan_version": report.tool.get("version", "")}
    if report.gate is not None:
        values["gate_passed"] = str(report.gate.passed).lower()
    for name, value in values.items():
        ET.SubElement(props, "property", name=name, value=str(value))
    return props


def _check_case(check: Check) -> ET.Element:
    case = ET.Element("testcase", classname="archscan.gate", name=check.title, time="0")
    if check.passed:
        ET.SubElement(case, "system-out").text = check.message
    else:
        fail = ET.SubElement(case, "failure", message=check.message, type=check.rule_id)
        fail.text = check.message + ("\nlayers: " + ", ".join(check.layers) if check.layers else "")
    return case


def _blamed(checks: tuple[Check, ...]) -> dict:
    out: dict[str, list[str]] = {}
    for c in checks:
        if not c.passed:
            for name in c.layers:
                out.setdefault(name, []).append(c.title)
    return out


def _layer_case(report: ScanReport, layer: LayerRecord, checks: list[str] | None) -> ET.Element:
    case = ET.Element("testcase", classname="archscan.layers", name=f"{layer.name} ({layer.type})",
                      time=_seconds(layer.seconds))
    if layer.source and ":" in layer.source:
        path, _, line = layer.source.rpartition(":")
        case.set("file", path)
        case.set("line", line)
    text = (f"{layer.status}: attack rows {layer.attack.rows} rank {layer.attack.rank} "
            f"of {layer.unknowns} unknowns (own system rank {layer.rank}, deficiency {layer.deficiency})")
    if checks:
        ET.SubElement(case, "failure", message=f"named by {', '.join(checks)}: {text}", type="archscan.gate").text = \
            f"{layer.name} [{layer.source or report.model.spec}]: {text}"
    else:
        ET.SubElement(case, "system-out").text = text
    return case


def _seconds(value) -> str:
    return f"{float(value or 0):.3f}"
