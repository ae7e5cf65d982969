"""GitHub-flavoured Markdown for a CI step summary ($GITHUB_STEP_SUMMARY) or a PR comment."""
from __future__ import annotations

from archscan.formatters import suggestions
from archscan.formatters.text import chain_phrase, layer_sources, optimisation_phrase
from archscan.defences import threat_suffix
from archscan.report.records import ScanReport

ICON = {"LEAKS": "🔴", "PARTIAL": "🟠", "UNVERIFIED": "🟣", "RESISTANT": "🟢"}
LAYER_COLUMNS = ("layer", "type", "in → out", "unknowns", "rows W/K/P", "rank", "deficiency", "attack rows (rank)",
                 "status", "source")


def render(report: ScanReport, stream) -> None:
    parts = [_heading(report), _scores(report), _gate(report), suggestions.markdown_section(report, cell),
             _layers(report), _findings(report), _footer(report)]
    stream.write("\n\n".join(p for p in parts if p) + "\n")


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _heading(report: ScanReport) -> str:
    v = report.scores.verdict
    return f"## archscan: `{report.model.spec}` — {ICON.get(v, '')} {v}"


def _scores(report: ScanReport) -> str:
    s, img = report.scores, report.image
    via = f", via `{img.via}`" if img.via else ""
    table = _table(("verdict", "leakage score", "predicted PSNR", "COPA index", "RA index", "image"),
                  [(f"**{s.verdict}**", f"{s.leakage_score:.3f}", f"{s.predicted_psnr:.1f} dB",
                    s.copa_index, s.ra_index, f"{img.status} (deficiency {img.deficiency} of {img.unknowns}{via})")])
    views = _table(("view", "what it finds"), [("closed-form attacks (layer chain)", chain_phrase(s)),
                                               ("optimisation attacks (gradient matching)", optimisation_phrase(s))])
    note = f"\n\n> {cell(s.verdict_note)}" if s.verdict_note else ""
    return table + "\n\n" + views + note


def _gate(report: ScanReport) -> str:
    g = report.gate
    if g is None:
        return ""
    src = layer_sources(report)
    lines = [f"### Gate: {'✅ passed' if g.passed else '❌ failed'} (resistance {g.resistance:.3f})", ""]
    for c in g.checks:
        lines.append(f"- {'✅' if c.passed else '❌'} **{cell(c.title)}**: {cell(c.message)}")
        if not c.passed and c.layers:
            named = ", ".join(f"`{n}` ({src[n]})" if src.get(n) else f"`{n}`" for n in c.layers)
            lines.append(f"  - layers responsible: {named}")
    return "\n".join(lines)


def _shape(s) -> str:
    return "×".join(str(v) for v in s)


def _layers(report: ScanReport) -> str:
    rows = [(f"`{l.name}`", l.type, f"{_shape(l.in_shape)} → {_shape(l.out_shape)}", l.unknowns,
             f"{l.rows.forward}/{l.rows.gradient}/{l.rows.padding}", l.rank, l.deficiency,
             f"{l.attack.rows} ({l.attack.rank})", l.status, l.source or "")
            for l in report.layers]
    return "### Layers\n\n" + _table(LAYER_COLUMNS, rows)


def _findings(report: ScanReport) -> str:
    found = report.findings
    if not found:
        return ""
    items = [f"- **{f.rule_id}** {f.severity}: {cell(f.message)}" + (f" (`{f.source}`)" if f.source else "")
             for f in found]
    return f"<details><summary>Findings ({len(found)})</summary>\n\n" + "\n".join(items) + "\n\n</details>"


def _footer(report: ScanReport) -> str:
    t, cov = report.threat_model, report.coverage
    return (f"<sub>threat model: batch {t.batch_size}, labels {t.labels}, weights {t.weights}, "
            f"BatchNorm {t.bn_mode}, seed {t.seed}{threat_suffix(t.defences, t.fedavg)} · coverage "
            f"{100 * cov.fraction:.0f}% ({cov.unsupported} unsupported) · archscan {report.tool.get('version', '')} · "
            f"{report.created}</sub>")
