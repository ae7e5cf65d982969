"""A torchinfo-like table plus a summary; plain text, fixed-width."""
from __future__ import annotations

COLUMNS = ("layer", "type", "in -> out", "unknowns", "rows W/K/P", "rank", "defic.", "attack rows", "status")


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


def table(report: dict) -> list[str]:
    rows = [COLUMNS] + [_row(l) for l in report["layers"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) if i < 7 else c.ljust(w)
                              for i, (c, w) in enumerate(zip(r, widths)))
    line = "-" * len(fmt(rows[0]))
    return [fmt(rows[0]), line] + [fmt(r) for r in rows[1:]] + [line]


def summary(report: dict) -> list[str]:
    s, img, cov = report["scores"], report["image"], report["coverage"]
    m = report["model"]
    return [
        f"model      {m['spec']}  input {_shape(m['input_shape'])}  traced with {m['trace_method']}",
        f"image      {img['status']} (deficiency {img['deficiency']} of {img['unknowns']}"
        + (f", via {img['via']})" if img.get("via") else ")"),
        f"verdict    {s['verdict']}  leakage score {s['leakage_score']:.3f}  predicted PSNR {s['predicted_psnr']:.1f} dB",
        f"indices    COPA {s['copa_index']}  RA {s['ra_index']}",
        f"coverage   {cov['handled']} handled, {cov['ignored']} ignored, {cov['unsupported']} unsupported "
        f"({100 * cov['fraction']:.0f}%)",
        f"threat     batch {report['threat_model']['batch_size']}, labels {report['threat_model']['labels']}, "
        f"weights {report['threat_model']['weights']}, BatchNorm {report['threat_model']['bn_mode']}",
    ]


def findings(report: dict) -> list[str]:
    out = []
    for f in report["findings"]:
        where = f" [{f['source']}]" if f.get("source") else ""
        out.append(f"{f['rule_id']} {f['severity']:<7} {f['message']}{where}")
    return out


def render(report: dict, stream) -> None:
    lines = table(report) + [""] + summary(report)
    found = findings(report)
    if found:
        lines += ["", "findings:"] + ["  " + f for f in found]
    stream.write("\n".join(lines) + "\n")
