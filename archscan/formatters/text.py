"""The text report: a torchinfo-like layer table (rows nested by module path, kernel, stride and
parameter counts, a totals row), then the summary, the findings and the gate; drawn with rich.

The table fits the output's width (``tables.output_width``: ``COLUMNS``, else the terminal, else
120 columns); when narrow it hides columns in ``LAYER_COLUMNS``' ``drop`` order -- rows W/K/P,
in -> out, attack rows, stride, kernel, params, type, unknowns -- and never the layer, rank,
deficiency or status, and says so under the table.  Colour (``supports_colour``) is rich's ANSI;
without it the output has no escape code.  ``quiet`` keeps the verdict line and the gate.

The report is ``SECTIONS`` in order, blank lines between them; each is ``section(report, colour,
width) -> lines`` (empty: left out), so another section is one more function in the tuple.
"""
from __future__ import annotations

import os

from archscan.defences import threat_suffix
from archscan.formatters import suggestions, tables
from archscan.formatters.tables import Column
from archscan.report.records import LayerRecord, ScanReport, Scores, named_sources

LAYER_COLUMNS = (
    Column("layer", wrap=True), Column("type", drop=7), Column("kernel", drop=5), Column("stride", drop=4),
    Column("in -> out", drop=2), Column("params", "right", drop=6), Column("unknowns", "right", drop=8),
    Column("rows W/K/P", "right", drop=1), Column("rank", "right"), Column("defic.", "right"),
    Column("attack rows", drop=3), Column("status"),
)
STATUS_ORDER = ("determined", "leak_source", "partial", "blocked")
ROW_STYLE = {"determined": "red", "leak_source": "red", "partial": "yellow", "blocked": "green"}
WORD_STYLE = {"LEAKS": "bold red", "PARTIAL": "bold yellow", "UNVERIFIED": "bold magenta", "RESISTANT": "bold green",
              "FAILED": "bold red", "FAIL": "bold red", "passed": "bold green"}
INDENT = "  "   # per level of the module path


def _rank(layer: LayerRecord) -> str:
    st = layer.ranks.stack
    return str(st.hi) if st.exact else f"{st.lo}-{st.hi}"


def _shape(s) -> str:
    return "x".join(str(v) for v in s)


def _pair(v) -> str:
    """A kernel (3, 3) -> '3x3'; None (not a convolution) -> ''."""
    return "" if not v else "x".join(str(x) for x in v)


def _stride(v) -> str:
    """(2, 2) -> '2', (1, 2) -> '1x2'."""
    return _pair(v[:1] if v and len(set(v)) == 1 else v)


def _count(n) -> str:
    return "" if n is None else f"{n:,}"


def nested(layers) -> list[tuple[int, str, LayerRecord | None]]:
    """(depth, label, layer or None for a module's group row) in the layers' order: a layer
    ``layer1.0.conv1`` is ``conv1`` at depth 2 under the group rows ``layer1`` and ``0`` (each opened
    once for a run of layers inside it; a module left and re-entered is opened again)."""
    out, open_path = [], []
    for layer in layers:
        parts = layer.name.split(".")
        common = 0
        while common < min(len(open_path), len(parts) - 1) and open_path[common] == parts[common]:
            common += 1
        out += [(d, parts[d], None) for d in range(common, len(parts) - 1)]
        out.append((len(parts) - 1, parts[-1], layer))
        open_path = parts
    return out


def _row(label: str, l: LayerRecord) -> tuple:
    rows = l.rows
    return (label, l.type, _pair(l.kernel), _stride(l.stride),
            f"{_shape(l.in_shape)} -> {_shape(l.out_shape)}", _count(l.params), str(l.unknowns),
            f"{rows.forward}/{rows.gradient}/{rows.padding}", _rank(l), str(l.deficiency),
            f"{l.attack.rows} ({l.attack.rank})", l.status)


def _totals(layers) -> tuple:
    """The totals row: the parameters of the layers in the table (the parametric layers: a
    BatchNorm's affine parameters are not among them), and the layers counted per status."""
    params = [l.params for l in layers if l.params is not None]
    counts = {s: sum(l.status == s for l in layers) for s in STATUS_ORDER}
    cells = {"layer": "total", "params": _count(sum(params)) if params else "",
             "status": "\n".join(f"{n} {s}" for s, n in counts.items() if n)}
    return tuple(cells.get(c.header, "") for c in LAYER_COLUMNS)


def rows(report: ScanReport) -> list[tuple]:
    """The table's rows (without the header): group and layer rows, then the totals row."""
    body = [_row(INDENT * d + label, l) if l else (INDENT * d + label,) + ("",) * (len(LAYER_COLUMNS) - 1)
            for d, label, l in nested(report.layers)]
    return body + [_totals(report.layers)]


def table(report: ScanReport, colour: bool = False, width: int | None = None) -> list[str]:
    """The layer table as lines no wider than ``width`` (default: ``tables.output_width()``)."""
    body = rows(report)
    styles = [("dim" if l is None else ROW_STYLE.get(l.status)) for _, _, l in nested(report.layers)]
    return tables.draw(list(LAYER_COLUMNS), body, width or tables.output_width(), colour, styles + ["bold"],
                       sections=(len(body) - 2,))


def _verdict_line(report: ScanReport) -> str:
    s = report.scores
    line = (f"verdict    {s.verdict}  leakage score {s.leakage_score:.3f}  "
            f"predicted PSNR {s.predicted_psnr:.1f} dB")
    if s.verdict_note:
        return line + f"  ({s.verdict_note})"
    return line + (f"  (from the {s.decided_by} view)" if s.decided_by else "")


def chain_phrase(scores: Scores) -> str:
    """'closed-form attacks: ...' -- what the layer chain reaches."""
    c = scores.chain
    if c is None:
        return ""
    where = {"determined": f"determine the image (via {c.via})",
             "partial": f"determine part of the image (via {c.via})",
             "blocked": f"are blocked at {c.stopped_at}" if c.stopped_at else "are blocked"}[c.image_status]
    return f"{where}; {c.verdict}, leakage {c.leakage_score:.3f}, predicted PSNR {c.predicted_psnr:.1f} dB"


def optimisation_phrase(scores: Scores) -> str:
    """'optimisation attacks: ...' -- what gradient matching resolves, or why that is unknown."""
    o = scores.optimisation
    if o is None:
        return ""
    if o.status != "ran":
        return f"not estimated ({o.status}: {o.reason})"
    d, lo_hi = o.directions, o.psnr_interval
    dirs = f"{d['estimate']} of {d['of']} directions recoverable, " if d else ""
    band = f" [{lo_hi[0]:.1f}, {lo_hi[1]:.1f}]" if lo_hi else ""
    return (f"{dirs}{o.verdict}, leakage {o.leakage_score:.3f}, "
            f"predicted PSNR {o.predicted_psnr:.1f} dB{band}")


def view_lines(report: ScanReport) -> list[str]:
    s = report.scores
    out = []
    if s.chain is not None:
        out.append(f"closed-form attacks   {chain_phrase(s)}")
    if s.optimisation is not None:
        out.append(f"optimisation attacks  {optimisation_phrase(s)}")
    return out


def summary(report: ScanReport) -> list[str]:
    s, img, cov, m, t = report.scores, report.image, report.coverage, report.model, report.threat_model
    return [
        f"model      {m.spec}  input {_shape(m.input_shape)}  traced with {m.trace_method}",
        f"image      {img.status} (deficiency {img.deficiency} of {img.unknowns}"
        + (f", via {img.via})" if img.via else ")"),
        *view_lines(report),
        _verdict_line(report),
        f"indices    COPA {s.copa_index}  RA {s.ra_index}",
        f"coverage   {cov.handled} handled, {cov.ignored} ignored, {cov.unsupported} unsupported "
        f"({100 * cov.fraction:.0f}%)",
        f"threat     batch {t.batch_size}, labels {t.labels}, weights {t.weights}, BatchNorm {t.bn_mode}"
        f"{threat_suffix(t.defences, t.fedavg)}",
    ]


def findings(report: ScanReport) -> list[str]:
    out = []
    for f in report.findings:
        where = f" [{f.source}]" if f.source else ""
        out.append(f"{f.rule_id} {f.severity:<7} {f.message}{where}")
    hidden = report.suppressed or ()
    if hidden:
        by = sorted({f.suppressed_by for f in hidden})
        out.append(f"({len(hidden)} finding{'s' if len(hidden) > 1 else ''} suppressed by {', '.join(by)}: "
                   f"{', '.join(sorted({f.rule_id for f in hidden}))}; the verdict and the gate are unchanged)")
    return out


def layer_sources(report: ScanReport) -> dict:
    return named_sources(report)


def gate(report: ScanReport) -> list[str]:
    """The gate's outcome, each failed check with the layers responsible (and their source lines)."""
    g = report.gate
    if g is None:
        return []
    src = layer_sources(report)
    head = f"gate       {'passed' if g.passed else 'FAILED'}  (resistance {g.resistance:.3f})"
    lines = [head]
    for c in g.checks:
        lines.append(f"  {'ok  ' if c.passed else 'FAIL'} {c.title}: {c.message}")
        if not c.passed and c.layers:
            named = ", ".join(f"{n} [{src[n]}]" if src.get(n) else n for n in c.layers)
            lines.append(f"       layers: {named}")
    return lines


def table_section(report: ScanReport, colour: bool, width: int) -> list[str]:
    return table(report, colour, width)


def summary_section(report: ScanReport, colour: bool, width: int) -> list[str]:
    return prose(summary(report), colour, width)


def findings_section(report: ScanReport, colour: bool, width: int) -> list[str]:
    found = findings(report)
    return prose(["findings:"] + ["  " + f for f in found], colour, width) if found else []


def suggestion_section(report: ScanReport, colour: bool, width: int) -> list[str]:
    """``archscan suggest`` / ``scan --suggest``: the smallest change that works, measured."""
    if not suggestions.present(report):
        return []
    head, *rest = suggestions.text_lines(report, width, colour)
    return prose([head], colour, width) + rest


def gate_section(report: ScanReport, colour: bool, width: int) -> list[str]:
    return prose(gate(report), colour, width)


# In order, a blank line between two; a section with nothing to say returns [].
SECTIONS = (table_section, summary_section, findings_section, suggestion_section, gate_section)


def lines(report: ScanReport, quiet: bool = False, colour: bool = False, width: int | None = None) -> list[str]:
    """The text report as lines: the table at ``width``, the prose never wrapped (colour: ANSI)."""
    width = width or tables.output_width()
    if quiet:
        fix = ["suggested  " + suggestions.headline(report)] if suggestions.present(report) else []
        return prose([f"model      {report.model.spec}", _verdict_line(report)] + fix + gate(report), colour, width)
    out = []
    for section in SECTIONS:
        part = section(report, colour, width)
        if part:
            out += ([""] if out else []) + part
    return out


def render(report: ScanReport, stream, quiet: bool = False, colour_choice: str = "auto") -> None:
    colour = supports_colour(stream, colour_choice)
    stream.write("\n".join(lines(report, quiet, colour, tables.output_width(stream))) + "\n")


def supports_colour(stream, choice: str = "auto") -> bool:
    """``--color always|never`` decides; else NO_COLOR (set and non-empty) turns colour off and
    FORCE_COLOR (set, not "0") on; else colour on a terminal whose TERM is not dumb."""
    if choice in ("always", "never"):
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "0") not in ("", "0"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def prose(lines: list[str], colour: bool, width: int) -> list[str]:
    """Report lines through the table's console, never wrapped; with colour the first verdict word
    of a line (LEAKS, PARTIAL, ..., FAIL, passed) is coloured."""
    if not colour:
        return tables.text_lines(lines, False, width)
    from rich.text import Text
    out = []
    for line in lines:
        t = Text(line)
        word = next((w for w in WORD_STYLE if f" {w} " in f" {line} "), None)
        if word:
            at = f" {line} ".index(f" {word} ")
            t.stylize(WORD_STYLE[word], at, at + len(word))
        out.append(t)
    return tables.text_lines(out, True, width)
