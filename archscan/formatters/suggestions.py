"""The report's ``suggestions`` (``archscan suggest`` / ``scan --suggest``) for every format: one
headline (the smallest change that works, with its measured effect) and one table of every change
tried.  Formatters call these; nothing here prints."""
from __future__ import annotations

from archscan.report.records import ScanReport
from archscan.report.suggestions import Outcome

COLUMNS = ("change", "verdict", "leakage", "predicted PSNR", "gate", "layer source")


def present(report: ScanReport) -> bool:
    return report.suggestions is not None


def headline(report: ScanReport) -> str:
    """One sentence: what to change and what it measured, or why nothing was suggested."""
    s = report.suggestions
    goal = "passes the gate" if s.target == "gate" else "improves the verdict"
    if s.best is not None:
        return f"smallest change that {goal}: {s.best.edit.change} -> {effect(s.baseline, s.best)}"
    if not s.outcomes:
        return "nothing to change: " + ("the gate passes" if s.target == "gate" else "the verdict is RESISTANT")
    closest = min((o for o in s.outcomes if not o.error), key=lambda o: o.leakage_score, default=None)
    tail = f"; the closest: {closest.edit.change} -> {effect(s.baseline, closest)}" if closest else ""
    return f"none of the {len(s.outcomes)} changes tried {goal}{tail}"


def effect(base: dict, o: Outcome) -> str:
    """'LEAKS -> PARTIAL, leakage 1.000 -> 0.909, predicted PSNR 150.0 -> 23.0 dB' (rescanned)."""
    return (f"{_arrow(base['verdict'], o.verdict)}, leakage {base['leakage_score']:.3f} -> {o.leakage_score:.3f}, "
            f"predicted PSNR {base['predicted_psnr']:.1f} -> {o.predicted_psnr:.1f} dB")


def _arrow(a: str, b: str) -> str:
    return a if a == b else f"{a} -> {b}"


def footnote(report: ScanReport) -> str:
    s = report.suggestions
    n = len(s.outcomes)
    tried = f"{n} change{'s' * (n != 1)} rescanned in {s.seconds:.1f} s, same options and seed"
    return tried + ("" if s.complete else "; stopped at the first that works (`archscan suggest` tries them all)")


def rows(report: ScanReport) -> list[tuple[str, ...]]:
    """One row per change tried, in the order tried (smallest first)."""
    out = []
    for o in report.suggestions.outcomes:
        if o.error:
            out.append((o.edit.change, "not applicable", "", "", "", o.error))
            continue
        gate = "" if o.gate_passed is None else ("passes" if o.gate_passed else "fails")
        out.append((o.edit.change, o.verdict, f"{o.leakage_score:.3f}", f"{o.predicted_psnr:.1f} dB", gate,
                    o.edit.source or ""))
    return out


def text_lines(report: ScanReport, width: int, colour: bool = False) -> list[str]:
    """The text report's section: the headline, the table of every change when all were tried
    (fitted to ``width`` like every text table), the footnote."""
    from archscan.formatters import tables
    if not present(report):
        return []
    out = ["suggested fix (measured by rescanning the changed model):", "  " + headline(report)]
    s = report.suggestions
    if s.complete and s.outcomes:
        columns = [tables.Column(COLUMNS[0], wrap=True), tables.Column(COLUMNS[1]),
                   tables.Column(COLUMNS[2], justify="right", drop=3),
                   tables.Column(COLUMNS[3], justify="right", drop=2), tables.Column(COLUMNS[4], drop=4),
                   tables.Column(COLUMNS[5], drop=1)]
        out += ["  " + line for line in tables.draw(columns, rows(report), max(width - 2, 40), colour)]
    return out + ["  " + footnote(report)]


def markdown_section(report: ScanReport, cell) -> str:
    if not present(report):
        return ""
    lines = ["### Suggested fix", "", f"**{cell(headline(report))}**", ""]
    if report.suggestions.outcomes:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows(report)]
        lines.append("")
    return "\n".join(lines + [f"_{cell(footnote(report))}_"])


def html_section(report: ScanReport, escape) -> str:
    if not present(report):
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows(report))
    table = f"<table><tr>{head}</tr>{body}</table>" if body else ""
    return (f"<h2>Suggested fix</h2><p><b>{escape(headline(report))}</b></p>{table}"
            f"<p class='note'>{escape(footnote(report))}</p>")
