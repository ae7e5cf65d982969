"""Renderers for ``archscan compare`` (a ``report.compare.Comparison``): text, json, markdown."""
from __future__ import annotations

import json

from archscan.formatters import tables
from archscan.formatters.tables import Column
from archscan.report.compare import Cell, Comparison, ModelRow

MODEL_COLUMNS = ("model", "verdict", "leakage score", "COPA index", "predicted PSNR", "worst layer")
# the text table's: hidden for width COPA index first, then predicted PSNR, then the worst layer
_MODEL_TEXT = (Column("model", wrap=True), Column("verdict"), Column("leakage score", "right"),
               Column("COPA index", "right", drop=1), Column("predicted PSNR", "right", drop=2),
               Column("worst layer", drop=3))


def _worst(row: ModelRow) -> str:
    w = row.worst_layer
    return f"{w.name} ({w.status}, {100 * w.fraction:.0f}%)" if w else "-"


def model_rows(cmp: Comparison) -> list[tuple]:
    return [(m.label, m.verdict, f"{m.leakage_score:.3f}", str(m.copa_index),
             f"{m.predicted_psnr:.1f} dB", _worst(m)) for m in cmp.models]


def _cell(c: Cell | None) -> str:
    if c is None:
        return "-"
    return f"{c.attack_rank}/{c.unknowns} d={c.deficiency} {c.status}"


def layer_rows(cmp: Comparison) -> list[tuple]:
    """Rows for the layers present in every model with the same type; '*' marks a difference."""
    return [(("* " if r.changed else "  ") + r.name, r.type, *(_cell(c) for c in r.cells))
            for r in cmp.layers if r.shared]


def render_text(cmp: Comparison, stream) -> None:
    width = tables.output_width(stream)
    out = tables.draw(list(_MODEL_TEXT), model_rows(cmp), width)
    labels = [m.label for m in cmp.models]
    shared = layer_rows(cmp)
    if shared:
        out += ["", "per layer (attack rank/unknowns, deficiency of [W; K], status; * = differs):"]
        columns = [Column("layer", wrap=True), Column("type", drop=1)] + [Column(label) for label in labels]
        out += tables.draw(columns, shared, width)
    else:
        out += ["", "no layer is shared by every model (same name and type): no per-layer diff"]
    others = [r.name for r in cmp.layers if not r.shared]
    if others:
        out.append(f"not shared: {', '.join(others)}")
    stream.write("\n".join(tables.text_lines(out, False, width)) + "\n")


def render_json(cmp: Comparison, stream) -> None:
    json.dump(cmp.to_dict(), stream, indent=2)
    stream.write("\n")


def _md(rows: list[tuple]) -> list[str]:
    esc = lambda v: str(v).replace("|", "\\|")
    return ["| " + " | ".join(esc(v) for v in rows[0]) + " |", "|" + "---|" * len(rows[0])] + \
        ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows[1:]]


def render_markdown(cmp: Comparison, stream) -> None:
    out = ["## archscan compare", ""] + _md([MODEL_COLUMNS] + model_rows(cmp))
    shared = layer_rows(cmp)
    if shared:
        labels = [m.label for m in cmp.models]
        out += ["", "### Shared layers (attack rank/unknowns, deficiency, status; * = differs)", ""]
        out += _md([("layer", "type", *labels)] + [(r[0].strip(), *r[1:]) for r in shared])
    stream.write("\n".join(out) + "\n")

