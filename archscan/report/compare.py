"""`archscan compare`: several models scanned under one threat model, side by side.

The comparison is a record (JSON ``kind: "comparison"``): one row per model (verdict, leakage
score, COPA index, predicted PSNR, worst layer) and one row per layer name, aligned across the
models, with each model's figures for that layer and whether they differ.  Layers with the same
name and type in every model are the shared structure (e.g. two widths of one conv).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from archscan.config.values import spec_file
from archscan.errors import InputError
from archscan.report.jsonable import from_json, to_json
from archscan.report.records import ImageRecord, LayerRecord, ScanReport, ThreatModel
from archscan.terms import Determination, Verdict

SCHEMA_VERSION = "1.0"
CELL_KEYS = ("unknowns", "rank", "deficiency", "attack_rank", "status")


@dataclass(frozen=True)
class WorstLayer:
    name: str
    status: Determination
    fraction: float
    source: str | None


@dataclass(frozen=True)
class ModelRow:
    label: str
    spec: str
    model_class: str = field(metadata={"key": "class"})
    verdict: Verdict
    leakage_score: float
    copa_index: int
    ra_index: int
    predicted_psnr: float
    image: ImageRecord
    worst_layer: WorstLayer | None


@dataclass(frozen=True)
class Cell:
    """One model's figures for one layer name."""
    type: str
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    unknowns: int
    rank: int
    deficiency: int
    attack_rank: int
    attack_rows: str
    status: Determination


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    shared: bool              # the same name and type in every model
    changed: bool             # not shared, or its figures differ between models
    cells: tuple[Cell | None, ...]


@dataclass(frozen=True, kw_only=True)
class Comparison:
    schema_version: str = SCHEMA_VERSION
    kind: str = "comparison"
    created: str = ""
    tool: dict = field(default_factory=dict)
    threat_model: ThreatModel
    models: tuple[ModelRow, ...]
    layers: tuple[LayerRow, ...]
    shared_layers: int

    def to_dict(self) -> dict:
        return to_json(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Comparison":
        return from_json(cls, data)


def precheck(specs: list[str]) -> None:
    """Missing model files fail before the first (slow) scan starts."""
    for spec in specs:
        where = spec_file(spec)
        if (where.endswith((".py", ".pt2")) or "/" in where) and not Path(where).is_file():
            raise InputError(f"{where}: no such file")


def comparison(reports: list[ScanReport]) -> Comparison:
    labels = model_labels([r.model.spec for r in reports])
    diff = layer_diff(reports)
    first = reports[0]
    return Comparison(created=first.created, tool=first.tool, threat_model=first.threat_model,
                      models=tuple(model_row(r, label) for r, label in zip(reports, labels)),
                      layers=tuple(diff), shared_layers=sum(1 for row in diff if row.shared))


def model_labels(specs: list[str]) -> list[str]:
    """The factory names when they tell the models apart, else the full specs."""
    short = [s.rpartition(":")[2] if ":" in s and not s.endswith(".pt2") else Path(s).name for s in specs]
    return short if len(set(short)) == len(short) else list(specs)


def worst_layer(report: ScanReport) -> WorstLayer | None:
    """The layer nearest the image whose input the attack determines the most (highest fraction)."""
    best = None
    for layer in report.layers:
        frac = layer.exposure
        if frac > 0 and (best is None or frac > best.fraction + 1e-12):
            best = WorstLayer(layer.name, layer.status, round(frac, 4), layer.source)
    return best


def model_row(report: ScanReport, label: str) -> ModelRow:
    s = report.scores
    return ModelRow(label, report.model.spec, report.model.model_class, s.verdict, s.leakage_score, s.copa_index,
                    s.ra_index, s.predicted_psnr, report.image, worst_layer(report))


def _cell(layer: LayerRecord | None) -> Cell | None:
    if layer is None:
        return None
    return Cell(layer.type, layer.in_shape, layer.out_shape, layer.unknowns, layer.rank, layer.deficiency,
                layer.attack.rank, layer.attack.rows, layer.status)


def layer_order(reports: list[ScanReport]) -> list[str]:
    """Every layer name once, in the order they first appear (forward order of each model)."""
    return list(dict.fromkeys(l.name for r in reports for l in r.layers))


def layer_diff(reports: list[ScanReport]) -> list[LayerRow]:
    by_name = [{l.name: l for l in r.layers} for r in reports]
    rows = []
    for name in layer_order(reports):
        cells = [_cell(m.get(name)) for m in by_name]
        present = [c for c in cells if c is not None]
        shared = len(present) == len(cells) and len({c.type for c in present}) == 1
        changed = not shared or len({tuple(getattr(c, k) for k in CELL_KEYS) for c in present}) > 1
        rows.append(LayerRow(name, present[0].type, shared, changed, tuple(cells)))
    return rows
