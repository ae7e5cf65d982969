"""The scan report as frozen records, one per block of the JSON schema (docs/report-schema.md).

Every stage after the pipeline -- findings, suppressions, the gate, suggestions, comparisons and
every formatter -- reads these records; the report becomes dicts only at the JSON edge
(``ScanReport.to_dict``, through ``report.jsonable``) and is read back from a stored JSON report
(a ``--baseline``) by ``ScanReport.from_dict``.  Nothing here prints.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass, field, replace

from archscan.report.jsonable import from_json, to_json
from archscan.report.suggestions import Suggestions
from archscan.terms import Determination, Verdict, ViewStatus

SCHEMA_VERSION = "2.0"
_OMIT = {"omit_none": True}


@dataclass(frozen=True)
class Finding:
    rule_id: str
    severity: str          # "error" | "warning" | "note"
    message: str
    layer: str | None = None
    source: str | None = None
    suppressed_by: str | None = field(default=None, metadata=_OMIT)   # --select | --ignore | comment

    def to_dict(self) -> dict:
        return to_json(self)


@dataclass(frozen=True)
class ModelInfo:
    spec: str
    input_shape: tuple[int, ...]
    model_class: str = field(metadata={"key": "class"})
    trace_method: str
    parametric_layers: int


@dataclass(frozen=True)
class ThreatModel:
    batch_size: int
    labels: str
    weights: str                   # given | generic
    bn_mode: str
    relu_active_fraction: float
    seed: int
    rank_draws: int
    optimisation_view: str
    optimisation_budget_s: float | None
    defences: tuple[dict, ...]
    fedavg: dict
    attacker: str


@dataclass(frozen=True)
class Bound:
    lo: int
    hi: int
    exact: bool
    method: str


@dataclass(frozen=True)
class Rows:
    forward: int
    gradient: int
    padding: int


@dataclass(frozen=True)
class Ranks:
    forward: Bound
    gradient: Bound
    stack: Bound


@dataclass(frozen=True)
class Pullback:
    rows: int
    linear: bool
    max_gain: int


@dataclass(frozen=True)
class ReluRecord:
    active_fraction: float
    samples: int
    expected_rank: float
    expected_rank_lo: float
    p_determined: float
    exact: bool


@dataclass(frozen=True)
class AttackRows:
    """What the attacker's rows at this layer determine in the propagated chain."""
    rows: str               # which rows: W, K, W+K, ...
    rank: int
    deficiency: int


@dataclass(frozen=True)
class LayerRecord:
    name: str               # module path (the node name when there is none)
    node: str
    type: str
    source: str | None
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    params: int
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    unknowns: int
    rows: Rows
    ranks: Ranks
    rank: int
    rank_exact: bool
    deficiency: int
    uncovered_unknowns: int
    pullback: Pullback
    relu: ReluRecord | None
    max_batch: int
    attack: AttackRows
    status: Determination
    conditioning: dict | None
    seconds: float

    @property
    def exposure(self) -> float:
        """The fraction of this layer's input the attack determines."""
        return self.attack.rank / self.unknowns if self.unknowns else 0.0


@dataclass(frozen=True)
class ImageRecord:
    status: Determination
    unknowns: int
    deficiency: int
    via: str | None
    relu_masked: bool


@dataclass(frozen=True)
class ChainScores:
    verdict: Verdict
    leakage_score: float
    predicted_mse: float
    predicted_psnr: float
    prior_images: int
    prediction_method: str
    image_status: Determination
    via: str | None
    stopped_at: str | None


@dataclass(frozen=True)
class OptimisationScores:
    status: ViewStatus
    reason: str
    verdict: Verdict | None
    leakage_score: float | None = field(default=None, metadata=_OMIT)
    predicted_mse: float | None = field(default=None, metadata=_OMIT)
    predicted_psnr: float | None = field(default=None, metadata=_OMIT)
    prior_images: int | None = field(default=None, metadata=_OMIT)
    prediction_method: str | None = field(default=None, metadata=_OMIT)
    leakage_interval: tuple[float, ...] | None = None
    psnr_interval: tuple[float, ...] | None = None
    directions: dict | None = None
    details: dict = field(default_factory=dict, metadata={"flatten": True})   # the run's plan and measurements


@dataclass(frozen=True)
class Scores:
    copa_index: int
    ra_index: int
    verdict: Verdict
    decided_by: str            # chain | optimisation
    verdict_note: str
    leakage_score: float
    predicted_mse: float
    predicted_psnr: float
    prior_images: int
    prediction_method: str
    chain: ChainScores
    optimisation: OptimisationScores


@dataclass(frozen=True)
class Coverage:
    handled: int
    ignored: int
    unsupported: int
    fraction: float


@dataclass(frozen=True)
class NodeRecord:
    name: str
    kind: str
    op: str
    module_path: str
    outcome: str               # handled | ignored | unsupported
    reason: str
    source: str | None


@dataclass(frozen=True)
class GatePolicy:
    fail_under: float | None
    fail_on: str | None
    baseline: str | None       # the baseline report's path
    baseline_model: str | None


@dataclass(frozen=True)
class Check:
    id: str            # fail-under | fail-on | baseline-score | baseline-verdict | baseline-layers
    rule_id: str       # report.catalogue id (AS200 ...)
    title: str
    passed: bool
    message: str
    layers: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return to_json(self)


@dataclass(frozen=True)
class GateResult:
    policy: GatePolicy
    resistance: float
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def responsible_layers(self) -> list[str]:
        return list(dict.fromkeys(name for c in self.failed for name in c.layers))

    def to_dict(self) -> dict:
        return {"passed": self.passed, "policy": to_json(self.policy), "resistance": self.resistance,
                "checks": to_json(self.checks), "responsible_layers": self.responsible_layers()}

    __json__ = to_dict


@dataclass(frozen=True, kw_only=True)
class ScanReport:
    schema_version: str = SCHEMA_VERSION
    tool: dict = field(default_factory=dict)
    created: str = ""
    model: ModelInfo
    threat_model: ThreatModel
    layers: tuple[LayerRecord, ...]
    image: ImageRecord
    scores: Scores
    coverage: Coverage
    findings: tuple[Finding, ...]
    nodes: tuple[NodeRecord, ...]
    timing: dict = field(default_factory=dict)
    suggestions: Suggestions | None = field(default=None, metadata=_OMIT)   # scan --suggest, archscan suggest
    suppressed: tuple[Finding, ...] | None = field(default=None, metadata=_OMIT)  # after --select/--ignore/comments
    gate: GateResult | None = field(default=None, metadata=_OMIT)
    validation: dict | None = field(default=None, metadata=_OMIT)   # a validate run's grid_png, best_psnr (HTML)

    def to_dict(self) -> dict:
        return to_json(self)

    @classmethod
    def from_dict(cls, data: dict, lenient: bool = False) -> "ScanReport":
        """A report read back from its JSON: every figure and finding; its ``suggestions`` and
        ``gate`` are not read (both are measured anew where wanted).  ``lenient``: fields an older
        schema lacks become None.  Raises ``jsonable.MissingField``."""
        return from_json(cls, {k: v for k, v in data.items() if k not in ("gate", "suggestions")}, lenient=lenient)

    def with_(self, **changes) -> "ScanReport":
        return replace(self, **changes)

    def layer(self, name: str) -> LayerRecord | None:
        return next((l for l in self.layers if l.name == name), None)


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


def named_sources(report: ScanReport) -> dict:
    """file:line of every name a report may cite: its layers, then its other nodes (activations,
    pools) by module path and by node name -- the gate blames an activation a suggestion swaps."""
    out = {}
    for n in report.nodes:
        if n.source:
            out.setdefault(n.name, n.source)
            if n.module_path:
                out.setdefault(n.module_path, n.source)
    out.update({l.name: l.source for l in report.layers if l.source})
    return out
