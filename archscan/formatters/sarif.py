"""SARIF 2.1.0 for GitHub code scanning: one result per finding and per failed gate check.

Every result has a location: the user's source file and line of the layer (from the traced stack),
else the model's own file (the factory's ``def`` line, or the ``.pt2`` file), so GitHub never drops
one.  Rule ids come from ``archscan.rules`` and never change meaning; ``partialFingerprints`` hash
the rule, the model and the layer (not the line), so an alert survives edits above it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

from archscan.report.catalogue import RULES, rule
from archscan.report.records import Finding, ScanReport, named_sources

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = ("error", "warning", "note")


def render(report: ScanReport, stream) -> None:
    json.dump(sarif_log(report), stream, indent=2)
    stream.write("\n")


def sarif_log(report: ScanReport) -> dict:
    items = finding_items(report) + _suppressed_items(report)
    ids = list(dict.fromkeys([*RULES, *(i["rule_id"] for i in items)]))  # every rule: stable ruleIndex
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": _driver(report, ids)},
        "automationDetails": {"id": automation_id(report)},
        "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "the directory archscan ran in"}}},
        "results": [_result(report, i, ids.index(i["rule_id"])) for i in items],
        "invocations": [_invocation(report)],
        "properties": _run_properties(report),
    }]}


def automation_id(report: ScanReport) -> str:
    """Code scanning's category of this run: ``ARCHSCAN_SARIF_CATEGORY`` when set (the Action's
    ``sarif-category``; upload-sarif never overrides an id the file already has), else one per model."""
    category = os.environ.get("ARCHSCAN_SARIF_CATEGORY", "").strip().strip("/")
    return f"{category}/" if category else f"archscan/{_model_key(report)}/"


def _invocation(report: ScanReport) -> dict:
    out = {"executionSuccessful": True}
    if report.created:
        out["endTimeUtc"] = report.created
    return out


def _driver(report: ScanReport, ids: list[str]) -> dict:
    version = report.tool.get("version", "0")
    return {"name": "archscan", "version": version, "semanticVersion": version,
            "rules": [_rule(rule(i)) for i in ids]}


def _rule(r) -> dict:
    return {"id": r.id, "name": r.name, "shortDescription": {"text": r.short}, "fullDescription": {"text": r.full},
            "help": {"text": f"{r.full} (archscan rule {r.id})",
                     "markdown": f"**{r.short}**\n\n{r.full}\n\n`archscan rule {r.id}`; all rules: docs/rules.md"},
            "defaultConfiguration": {"level": r.level},
            "properties": {"tags": list(r.tags), "precision": "high", "problem.severity": _problem(r.level),
                           "security-severity": f"{r.security_severity:.1f}"}}


def _problem(level: str) -> str:
    return {"error": "error", "warning": "warning"}.get(level, "recommendation")


def finding_items(report: ScanReport) -> list[dict]:
    """Findings, then failed gate checks (one per check, at the first layer it names)."""
    out = [_item(f) for f in report.findings]
    sources = named_sources(report)
    for c in report.gate.checks if report.gate is not None else ():
        if not c.passed:
            first = c.layers[0] if c.layers else None
            out.append({"rule_id": c.rule_id, "level": "error", "message": f"archscan gate: {c.message}",
                        "layer": first, "source": sources.get(first),
                        "related": tuple((n, sources.get(n)) for n in c.layers[1:])})
    return out


def _item(f: Finding) -> dict:
    return {"rule_id": f.rule_id, "level": f.severity if f.severity in LEVELS else "warning",
            "message": f.message, "layer": f.layer, "source": f.source, "related": ()}


def _suppressed_items(report: ScanReport) -> list[dict]:
    """Suppressed findings stay in SARIF, marked as such (code scanning shows them as dismissed)."""
    return [{**_item(f), "suppressed_by": f.suppressed_by} for f in report.suppressed or ()]


def _result(report: ScanReport, item: dict, index: int) -> dict:
    uri, line = location(report, item["source"])
    layer = item["layer"] or "model"
    message = item["message"] + (f" (layer {item['layer']})" if item["layer"] and item["layer"] not in item["message"] else "")
    out = {"ruleId": item["rule_id"], "ruleIndex": index, "level": item["level"], "message": {"text": message},
           "locations": [_physical(uri, line, layer)],
           "partialFingerprints": {"archscanFinding/v1": fingerprint(report, item)}}
    related = [dict(_physical(*location(report, src), name), id=k, message={"text": f"layer {name}"})
               for k, (name, src) in enumerate(item["related"][:50])]
    if related:
        out["relatedLocations"] = related
    if item.get("suppressed_by"):
        by = item["suppressed_by"]
        out["suppressions"] = [{"kind": "inSource" if by == "comment" else "external",
                                "justification": f"archscan {'# archscan: ignore comment' if by == 'comment' else by}"}]
    return out


def _physical(uri: str, line: int, layer: str) -> dict:
    return {"physicalLocation": {"artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"} if not uri.startswith("file:")
                                 else {"uri": uri}, "region": {"startLine": line}},
            "logicalLocations": [{"name": layer, "kind": "module"}]}


def location(report: ScanReport, source: str | None) -> tuple[str, int]:
    """(uri, line) for a ``file:line`` source, else the model's own file."""
    if source:
        path, _, line = source.rpartition(":")
        if path and line.isdigit():
            return _uri(path), max(int(line), 1)
    return model_location(report.model.spec)


def model_location(spec: str) -> tuple[str, int]:
    """The .pt2 file, or the file defining the factory (its ``def``/``class`` line when found)."""
    if spec.endswith(".pt2"):
        return _uri(spec), 1
    where, _, name = spec.rpartition(":")
    if not where:  # a model given as a live object (the pytest plugin): no file to point at
        return _uri(re.sub(r"[^\w.-]", "_", spec).strip("_") or "model"), 1
    path = where if where.endswith(".py") or "/" in where else _module_file(where)
    if not path:
        return _uri(where.replace(".", "/") + ".py"), 1
    return _uri(path), _definition_line(path, name)


def _module_file(module: str) -> str | None:
    try:
        import importlib.util
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec and spec.origin and spec.origin.endswith(".py") else None


def _definition_line(path: str, name: str) -> int:
    pattern = re.compile(rf"^\s*(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=")
    try:
        for n, text in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if pattern.match(text):
                return n
    except (OSError, UnicodeDecodeError):
        pass
    return 1


def _uri(path: str) -> str:
    """Relative to the repository root (what GitHub resolves against) when the file lies in one,
    else relative to the working directory, else an absolute file: URI."""
    p = Path(path)
    full = p if p.is_absolute() else Path.cwd() / p
    root = repo_root()
    if root is not None:
        try:
            return quote(full.resolve().relative_to(root).as_posix(), safe="/")
        except ValueError:
            pass
    if p.is_absolute():
        return p.as_uri()
    return quote(p.as_posix().removeprefix("./"), safe="/")


def repo_root() -> Path | None:
    """The enclosing git checkout of the working directory (GITHUB_WORKSPACE on Actions)."""
    here = Path.cwd().resolve()
    return next((d for d in (here, *here.parents) if (d / ".git").exists()), None)


def _model_key(report: ScanReport) -> str:
    spec = report.model.spec
    where, _, name = spec.rpartition(":")
    if spec.endswith(".pt2") or not where:
        return Path(spec).name
    return f"{Path(where).stem if where.endswith('.py') else where}:{name}"


def fingerprint(report: ScanReport, item: dict) -> str:
    key = "|".join([item["rule_id"], _model_key(report), item["layer"] or "", item["message"] if not item["layer"] else ""])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _run_properties(report: ScanReport) -> dict:
    s = report.scores
    props = {"model": report.model.spec, "verdict": s.verdict, "leakageScore": s.leakage_score,
             "copaIndex": s.copa_index, "predictedPsnr": s.predicted_psnr, "schemaVersion": report.schema_version}
    if report.gate is not None:
        props["gatePassed"] = report.gate.passed
    return props
