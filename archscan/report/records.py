"""The scan report: frozen, JSON-able records.  Formatters render it; nothing here prints."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field

SCHEMA_VERSION = "2.0"


@dataclass(frozen=True)
class Finding:
    rule_id: str
    severity: str          # "error" | "warning" | "note"
    message: str
    layer: str | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ScanReport:
    model: dict
    threat_model: dict
    layers: list
    nodes: list
    image: dict
    scores: dict
    coverage: dict
    findings: list
    timing: dict
    tool: dict = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION, "tool": self.tool, "created": self.created,
            "model": self.model, "threat_model": self.threat_model, "layers": self.layers,
            "image": self.image, "scores": self.scores, "coverage": self.coverage,
            "findings": [f.to_dict() for f in self.findings], "nodes": self.nodes,
            "timing": self.timing,
        }


def tool_info() -> dict:
    import numpy
    import torch

    from archscan import __version__
    return {"name": "archscan", "version": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__}


def now() -> str:
    fixed = os.environ.get("ARCHSCAN_FIXED_TIME")  # golden files and reproducible reports
    return fixed or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def relpath(source: str | None) -> str | None:
    """file:line relative to the working directory when the file lies under it."""
    if not source:
        return source
    path, _, line = source.rpartition(":")
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return source
    return f"{rel}:{line}" if not rel.startswith("..") else source


def named_sources(report: dict) -> dict:
    """file:line of every name a report may cite: its layers, then its other nodes (activations,
    pools) by module path and by node name -- the gate blames an activation a suggestion swaps."""
    out = {}
    for n in report.get("nodes", ()):
        if n.get("source"):
            out.setdefault(n["name"], n["source"])
            if n.get("module_path"):
                out.setdefault(n["module_path"], n["source"])
    out.update({l["name"]: l.get("source") for l in report["layers"] if l.get("source")})
    return out
