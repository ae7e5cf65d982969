"""A torchinfo-like table plus a summary; plain text, fixed-width.

On a terminal (``stream.isatty()``, ``NO_COLOR`` unset, ``TERM`` not ``dumb``) the table is drawn
with ``rich`` when it is installed and with ANSI colours otherwise; piped output is plain.
``quiet`` keeps the verdict line and the gate.
"""
from __future__ import annotations

import os

from archscan.defences import threat_suffix

COLUMNS = ("layer", "type", "in -> out", "unknowns", "rows W/K/P", "rank", "defic.", "attack rows", "status")
STATUS_COLOUR = {"determined": "31", "leak_source": "31", "partial": "33", "blocked": "32",
                 "LEAKS": "1;31", "PARTIAL": "1;33", "UNVERIFIED": "1;35", "RESISTANT": "1;32", "FAILED": "1;31", "passed": "1;32"}


def _rank(layer: dict) -> str:
    st = layer["ranks"]["stack"]
    return str(st["hi"]) if st["exact"] else f"{st['lo']}-{st['hi']}"


def _shape(s) -> str:
    return "x".join(str(v) for v in s)


def _row(l: dict) -> tuple:
    rows = l["rows"]
    return (l["name"], l["type"], f"{_shape(l['in_shape'])} -> {_shape(l['out_shape'])}", str(l["unknowns"]),
            f"{rows['forward']}/{rows['gradient']}/{rows['padding']}", _rank(l), str(l["deficiency"]),
            f"{l['attack']['rows']} ({l['attack']['rank']})", l["status"])


def rows(report: dict) -> list[tuple]:
    return [COLUMNS] + [_row(l) for l in report["layers"]]


def table(report: dict, colour: bool = False) -> list[str]:
    body = rows(report)
    widths = [max(len(r[i]) for r in body) for i in range(len(COLUMNS))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) if i < 7 else c.ljust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    line = "-" * len(fmt(body[0]))
    out = [fmt(r) for r in body[1:]]
    if colour:
        out = [_paint(text.rstrip(), r[-1]) for text, r in zip(out, body[1:])]
    return [fmt(body[0]), line] + out + [line]


def _verdict_line(report: dict) -> str:
    s = report["scores"]
    line = (f"verdict    {s['verdict']}  leakage score {s['leakage_score']:.3f}  "
            f"predicted PSNR {s['predicted_psnr']:.1f} dB")
    if s.get("verdict_note"):
        return line + f"  ({s['verdict_note']})"
    return line + (f"  (from the {s['decided_by']} view)" if s.get("decided_by") else "")


def chain_phrase(scores: dict) -> str:
    """'closed-form attacks: ...' -- what the layer chain reaches."""
    c = scores.get("chain")
    if not c:
        return ""
    where = {"determined": f"determine the image (via {c['via']})",
             "partial": f"determine part of the image (via {c['via']})",
             "blocked": f"are blocked at {c['stopped_at']}" if c.get("stopped_at") else "are blocked"}[c["image_status"]]
    return f"{where}; {c['verdict']}, leakage {c['leakage_score']:.3f}, predicted PSNR {c['predicted_psnr']:.1f} dB"


def optimisation_phrase(scores: dict) -> str:
    """'optimisation attacks: ...' -- what gradient matching resolves, or why that is unknown."""
    o = scores.get("optimisation")
    if not o:
        return ""
    if o["status"] != "ran":
        return f"not estimated ({o['status']}: {o['reason']})"
    d, lo_hi = o.get("directions"), o.get("psnr_interval")
    dirs = f"{d['estimate']} of {d['of']} directions recoverable, " if d else ""
    band = f" [{lo_hi[0]:.1f}, {lo_hi[1]:.1f}]" if lo_hi else ""
    return (f"{dirs}{o['verdict']}, leakage {o['leakage_score']:.3f}, "
            f"predicted PSNR {o['predicted_psnr']:.1f} dB{band}")


def view_lines(report: dict) -> list[str]:
    s = report["scores"]
    out = []
    if s.get("chain"):
        out.append(f"closed-form attacks   {chain_phrase(s)}")
    if s.get("optimisation"):
        out.append(f"optimisation attacks  {optimisation_phrase(s)}")
    return out


def summary(report: dict) -> list[str]:
    s, img, cov = report["scores"], report["image"], report["coverage"]
    m = report["model"]
    return [
        f"model      {m['spec']}  input {_shape(m['input_shape'])}  traced with {m['trace_method']}",
        f"image      {img['status']} (deficiency {img['deficiency']} of {img['unknowns']}"
        + (f", via {img['via']})" if img.get("via") else ")"),
        *view_lines(report),
        _verdict_line(report),
        f"indices    COPA {s['copa_index']}  RA {s['ra_index']}",
        f"coverage   {cov['handled']} handled, {cov['ignored']} ignored, {cov['unsupported']} unsupported "
        f"({100 * cov['fraction']:.0f}%)",
        f"threat     batch {report['threat_model']['batch_size']}, labels {report['threat_model']['labels']}, "
        f"weights {report['threat_model']['weights']}, BatchNorm {report['threat_model']['bn_mode']}"
        f"{threat_suffix(report['threat_model'])}",
    ]


def findings(report: dict) -> list[str]:
    out = []
    for f in report["findings"]:
        where = f" [{f['source']}]" if f.get("source") else ""
        out.append(f"{f['rule_id']} {f['severity']:<7} {f['message']}{where}")
    hidden = report.get("suppressed") or []
    if hidden:
        by = sorted({f["suppressed_by"] for f in hidden})
        out.append(f"({len(hidden)} finding{'s' if len(hidden) > 1 else ''} suppressed by {', '.join(by)}: "
                   f"{', '.join(sorted({f['rule_id'] for f in hidden}))}; the verdict and the gate are unchanged)")
    return out


def layer_sources(report: dict) -> dict:
    return {l["name"]: l.get("source") for l in report["layers"]}


def gate(report: dict) -> list[str]:
    """The gate's outcome, each failed check with the layers responsible (and their source lines)."""
    g = report.get("gate")
    if not g:
        return []
    src = layer_sources(report)
    head = f"gate       {'passed' if g['passed'] else 'FAILED'}  (resistance {g['resistance']:.3f})"
    lines = [head]
    for c in g["checks"]:
        lines.append(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['title']}: {c['message']}")
        if not c["passed"] and c["layers"]:
            named = ", ".join(f"{n} [{src[n]}]" if src.get(n) else n for n in c["layers"])
            lines.append(f"       layers: {named}")
    return lines


def lines(report: dict, quiet: bool = False, colour: bool = False) -> list[str]:
    if quiet:
        out = [f"model      {report['model']['spec']}", _verdict_line(report)] + gate(report)
    else:
        out = table(report, colour) + [""] + summary(report)
        found = findings(report)
        if found:
            out += ["", "findings:"] + ["  " + f for f in found]
        if report.get("gate"):
            out += [""] + gate(report)
    return [_paint_words(l) for l in out] if colour else out


def render(report: dict, stream, quiet: bool = False, colour_choice: str = "auto") -> None:
    colour = supports_colour(stream, colour_choice)
    if colour and not quiet and _rich_render(report, stream):
        return
    stream.write("\n".join(lines(report, quiet, colour)) + "\n")


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


def _paint(text: str, key: str) -> str:
    code = STATUS_COLOUR.get(key)
    return f"\033[{code}m{text}\033[0m" if code else text


def _paint_words(line: str) -> str:
    for word in ("LEAKS", "PARTIAL", "UNVERIFIED", "RESISTANT", "FAILED", "FAIL"):
        if f" {word} " in f" {line} ":
            return line.replace(word, _paint(word, "FAILED" if word == "FAIL" else word), 1)
    return line


def _rich_render(report: dict, stream) -> bool:
    """The table with rich when it is installed (optional); False to fall back to plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    console = Console(file=stream, highlight=False)
    t = Table(title=f"archscan: {report['model']['spec']}", title_justify="left")
    for i, name in enumerate(COLUMNS):
        t.add_column(name, justify="right" if 3 <= i < 7 else "left")
    for r in rows(report)[1:]:
        style = {"determined": "red", "leak_source": "red", "partial": "yellow", "blocked": "green"}.get(r[-1])
        t.add_row(*r, style=style)
    console.print(t)
    rest = summary(report) + ([""] + ["findings:"] + ["  " + f for f in findings(report)] if report["findings"] or report.get("suppressed") else [])
    rest += ([""] + gate(report)) if report.get("gate") else []
    console.print("\n".join(rest), markup=False)
    return True
