"""One self-contained HTML page: summary, gate, per-layer table, two plots (matplotlib, Agg, inline
PNG) and, when ``validate`` ran, its reconstruction grid.  No external resource is referenced."""
from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

from archscan.formatters import suggestions
from archscan.formatters.text import chain_phrase, layer_sources, optimisation_phrase
from archscan.defences import threat_suffix
from archscan.report.records import ScanReport

STATUS_CLASS = {"determined": "bad", "leak_source": "bad", "partial": "warn", "blocked": "good"}
VERDICT_CLASS = {"LEAKS": "bad", "PARTIAL": "warn", "UNVERIFIED": "unverified", "RESISTANT": "good"}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} table.layers td{white-space:nowrap} th{background:#f4f4f4}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.badge.bad{background:#c62828}.badge.warn{background:#ef6c00}.badge.good{background:#2e7d32}.badge.unverified{background:#6a1b9a}
tr.bad td.s{color:#c62828;font-weight:600} tr.warn td.s{color:#ef6c00} tr.good td.s{color:#2e7d32}
.fail{color:#c62828;font-weight:600}.pass{color:#2e7d32;font-weight:600}
img.plot{max-width:100%;border:1px solid #eee} code{background:#f6f6f6;padding:0 3px}
footer{margin-top:2em;color:#777;font-size:12px}
"""


def render(report: ScanReport, stream) -> None:
    s = report.scores
    title = f"archscan: {report.model.spec}"
    body = [f"<h1>{escape(title)}</h1>",
            f"<p><span class='badge {VERDICT_CLASS.get(s.verdict, '')}'>{escape(s.verdict)}</span></p>",
            _summary(report), _gate(report), suggestions.html_section(report, escape), _layers(report), _plots(report), _grid(report), _findings(report),
            _footer(report)]
    stream.write("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                 f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
                 + "\n".join(b for b in body if b) + "\n</body></html>\n")


def _rows(header, rows, numeric=(), cls: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    table = f"<table class='{cls}'>" if cls else "<table>"
    out = [f"{table}<tr>{head}</tr>" if any(header) else table]
    for cls, row in rows:
        cells = "".join(f"<td class='{'n' if i in numeric else ('s' if header[i] == 'status' else '')}'>"
                        f"{escape(str(v))}</td>" for i, v in enumerate(row))
        out.append(f"<tr class='{cls}'>{cells}</tr>")
    return "\n".join(out) + "</table>"


def _summary(report: ScanReport) -> str:
    s, img, m = report.scores, report.image, report.model
    via = f", via {img.via}" if img.via else ""
    rows = [("verdict", s.verdict + (f" ({s.verdict_note})" if s.verdict_note else "")),
            ("closed-form attacks", chain_phrase(s)), ("optimisation attacks", optimisation_phrase(s)),
            ("leakage score", f"{s.leakage_score:.3f}"),
            ("predicted PSNR", f"{s.predicted_psnr:.1f} dB"), ("COPA index", s.copa_index),
            ("RA index", s.ra_index), ("image", f"{img.status} (deficiency {img.deficiency} of {img.unknowns}{via})"),
            ("input", "×".join(map(str, m.input_shape))), ("traced with", m.trace_method)]
    return "<h2>Summary</h2>" + _rows(("", ""), [("", r) for r in rows])


def _gate(report: ScanReport) -> str:
    g = report.gate
    if g is None:
        return ""
    src = layer_sources(report)
    items = []
    for c in g.checks:
        layers = "".join(f" <code>{escape(n)}</code>" + (f" ({escape(src[n])})" if src.get(n) else "") for n in c.layers)
        items.append(f"<li><span class='{'pass' if c.passed else 'fail'}'>{'ok' if c.passed else 'FAIL'}</span> "
                     f"<b>{escape(c.title)}</b>: {escape(c.message)}" + (f"<br>layers:{layers}" if layers else "") + "</li>")
    state = "<span class='pass'>passed</span>" if g.passed else "<span class='fail'>failed</span>"
    return f"<h2>Gate: {state} (resistance {g.resistance:.3f})</h2><ul>{''.join(items)}</ul>"


def _layers(report: ScanReport) -> str:
    header = ("layer", "type", "in → out", "unknowns", "rows W/K/P", "rank", "deficiency", "attack rows", "attack rank",
              "status", "source")
    rows = [(STATUS_CLASS.get(l.status, ""),
             (l.name, l.type, f"{'×'.join(map(str, l.in_shape))} → {'×'.join(map(str, l.out_shape))}",
              l.unknowns, f"{l.rows.forward}/{l.rows.gradient}/{l.rows.padding}", l.rank,
              l.deficiency, l.attack.rows, l.attack.rank, l.status, l.source or ""))
            for l in report.layers]
    return "<h2>Layers</h2>" + _rows(header, rows, numeric=(3, 5, 6, 8), cls="layers")


def _findings(report: ScanReport) -> str:
    if not report.findings:
        return ""
    rows = [("", (f.rule_id, f.severity, f.message, f.source or "")) for f in report.findings]
    return "<h2>Findings</h2>" + _rows(("rule", "severity", "message", "source"), rows)


def _img(png: bytes, alt: str) -> str:
    return f"<img class='plot' alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _plots(report: ScanReport) -> str:
    if not report.layers:
        return ""
    return ("<h2>Unknowns and ranks per layer</h2>" + _img(rank_plot(report), "unknowns vs rank by row kind")
            + "<h2>Deficiency along the depth</h2>" + _img(depth_plot(report), "deficiency along the depth"))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def rank_plot(report: ScanReport) -> bytes:
    """Grouped bars per layer: unknowns, rank of W, of K, of [W; K] and of the attacker's rows."""
    layers = report.layers
    fig = _figure(max(6.0, 1.1 * len(layers) + 2), 3.6)
    ax = fig.add_subplot()
    series = [("unknowns", [l.unknowns for l in layers], "#9e9e9e"),
              ("rank W (forward)", [l.ranks.forward.hi for l in layers], "#1e88e5"),
              ("rank K (gradient)", [l.ranks.gradient.hi for l in layers], "#8e24aa"),
              ("rank [W; K]", [l.rank for l in layers], "#43a047"),
              ("attack rank", [l.attack.rank for l in layers], "#e53935")]
    width = 0.8 / len(series)
    for k, (label, values, colour) in enumerate(series):
        ax.bar([i + (k - 2) * width for i in range(len(layers))], values, width, label=label, color=colour)
    ax.set_xticks(range(len(layers)), [l.name for l in layers], rotation=30, ha="right")
    ax.set_ylabel("dimension")
    ax.legend(fontsize=8, ncols=5, loc="lower left", bbox_to_anchor=(0, 1.01), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def depth_plot(report: ScanReport) -> bytes:
    """Own-system deficiency and the attacker's deficiency, from the image (left) to the output."""
    layers = report.layers
    fig = _figure(max(6.0, 0.7 * len(layers) + 2), 3.2)
    ax = fig.add_subplot()
    x = range(len(layers))
    ax.plot(x, [l.deficiency for l in layers], "o-", color="#1e88e5", label="deficiency of [W; K]")
    ax.plot(x, [l.attack.deficiency for l in layers], "s--", color="#e53935", label="attack deficiency")
    ax.set_xticks(list(x), [l.name for l in layers], rotation=30, ha="right")
    ax.set_xlabel("depth (image → output)")
    ax.set_ylabel("undetermined dimensions")
    top = max([l.attack.deficiency for l in layers] + [l.deficiency for l in layers] + [1])
    ax.set_ylim(-0.03 * top, 1.08 * top)
    ax.legend(fontsize=8, ncols=2, loc="lower left", bbox_to_anchor=(0, 1.01), frameon=False)
    ax.grid(alpha=0.3)
    return _png(fig)


def _grid(report: ScanReport) -> str:
    v = report.validation or {}
    png = grid_bytes(v.get("grid_png"))
    if png is None:
        return ""
    best = v.get("best_psnr")
    note = f"<p>best achieved PSNR {best:.1f} dB (median over images of the best attack)</p>" \
        if isinstance(best, (int, float)) else ""
    return "<h2>Reconstructions (validate)</h2>" + note + _img(png, "original vs reconstructions")


def grid_bytes(value) -> bytes | None:
    """A PNG given as a path, a data: URI or base64 text; None when absent or unreadable."""
    if not value or not isinstance(value, (str, bytes)):
        return None
    if isinstance(value, bytes):
        return value
    if value.startswith("data:image/png;base64,"):
        value = value.split(",", 1)[1]
    try:
        if len(value) < 4096 and Path(value).is_file():
            return Path(value).read_bytes()
    except OSError:  # a long base64 string is not a valid file name
        pass
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return data if data.startswith(b"\x89PNG") else None


def _footer(report: ScanReport) -> str:
    t = report.threat_model
    versions = ", ".join(f"{k} {v}" for k, v in report.tool.items() if k != "name")
    return (f"<footer>threat model: batch {t.batch_size}, labels {t.labels}, weights {t.weights}, "
            f"BatchNorm {t.bn_mode}, seed {t.seed}{escape(threat_suffix(t.defences, t.fedavg))} · {escape(versions)} · "
            f"{escape(report.created)}</footer>")
