"""validate's report as plain text: per attack and image (or, tuned, the oracle and the
objective-selected configuration), the prediction next to the best achieved, the threat model; a
zoo report as one row per model with Spearman and its interval.  The tables fit the width of
standard output (``tables``: hidden columns named under the table, names wrap)."""
from __future__ import annotations

from archscan.defences import spelled
from archscan.fedavg import suffix
from archscan.formatters import tables
from archscan.formatters.tables import Column

ZOO_COLUMNS = (Column("model", wrap=True), Column("chain", drop=3), Column("optimis.", drop=4), Column("verdict"),
               Column("pred dB", "right"), Column("best dB", "right"), Column("SSIM", "right", drop=2),
               Column("err", "right", drop=5), Column("sel dB", "right", drop=1), Column("best attack", drop=6))
RESULT_COLUMNS = (Column("attack"), Column("image", wrap=True), Column("PSNR dB", "right"), Column("SSIM", "right"),
                  Column("s/img", "right", drop=1))
TUNED_COLUMNS = (Column("attack"), Column("configs", "right", drop=2), Column("image"), Column("oracle dB", "right"),
                 Column("oracle configuration", wrap=True), Column("selected dB", "right"),
                 Column("selected configuration", wrap=True, drop=1))


def render(report: dict) -> str:
    width = tables.output_width()
    if report.get("kind") == "zoo-validation":
        rows = [(r["spec"].split("/")[-1], str(r.get("chain_verdict")), str(r.get("optimisation_verdict")),
                 str(r["verdict"]), _f(r["predicted_psnr"], 1), _f(r["best_psnr"], 1), _f(r.get("best_ssim"), 2),
                 _f(r.get("error_db"), 1), _f(r.get("selected_psnr"), 1), ",".join(r["best_attacks"]))
                for r in report["models"]]
        lines = tables.draw(list(ZOO_COLUMNS), rows, width)
        lines.append(f"within 4 dB (clipped): {report.get('within_4db')}")
        lines.append(f"Spearman (predicted vs best achieved PSNR, both clipped at the 8-bit ceiling "
                     f"{report['quality_ceiling_db']} dB): {report['spearman']} "
                     f"[95% bootstrap {report.get('spearman_interval')}]  (unclipped: "
                     f"{report['spearman_raw']}; against the objective-selected PSNR: "
                     f"{report.get('spearman_selected')})")
        return _text(lines, width)
    pred = report["prediction"] or {}
    if report.get("budget"):
        lines = _render_tuned(report, width)
    else:
        rows = [(r["attack"], r["image"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['seconds']:.3f}")
                for r in report["results"]]
        lines = tables.draw(list(RESULT_COLUMNS), rows, width)
    lines += [f"skipped {a['attack']}: {a['skipped']}" for a in report["attacks"] if a["skipped"]]
    lines.append(f"predicted  {pred.get('verdict')}  leakage score {pred.get('leakage_score')}  "
                 f"predicted PSNR {pred.get('predicted_psnr')} dB" if pred else
                 f"predicted  n/a ({report['prediction_skipped']})")
    lines.append(f"achieved   best PSNR (median over images of the best attack) {_f(report['best_psnr'], 2)} dB "
                 f"on {report['device']}")
    if report["threat_model"].get("defences"):
        lines.append(f"defences   {spelled(report['threat_model']['defences'])} (the attacks saw the defended update)")
    if report["threat_model"].get("fedavg", {}).get("local_steps", 1) > 1:
        lines.append(f"client     {suffix(report['threat_model'])[2:]}: the attacks matched the simulated update; "
                     f"closed-form attacks do not apply")
    lines.append(f"           objective-selected PSNR (lowest gradient match, no true image needed) "
                 f"{_f(report.get('selected_psnr'), 2)} dB")
    return _text(lines, width)


def _text(lines: list[str], width: int) -> str:
    return "\n".join(tables.text_lines(lines, False, width)) + "\n"


def _render_tuned(report: dict, width: int) -> list:
    """Per attack and image: the oracle-best and the objective-selected configuration."""
    rows = []
    for a in report["attacks"]:
        if a.get("skipped") or "oracle" not in a:
            continue
        for image, o in a["oracle"].items():
            sel = a["selected"].get(image, {})
            rows.append((a["attack"], str(a["configurations"]), image, f"{o['psnr']:.2f}", o["label"],
                         _f(sel.get("psnr"), 2), sel.get("label", "-")))
    lines = [f"budget {report['budget']}: every configuration's PSNR, SSIM, objective, match and seconds are in "
             f"--format json"] + tables.draw(list(TUNED_COLUMNS), rows, width)
    for image, b in report["best"].items():
        sel = report["selected"].get(image, {})
        lines.append(f"best     {image}: oracle {b['psnr']:.2f} dB ({b['attack']} {b.get('label', '')}), "
                     f"selected {_f(sel.get('psnr'), 2)} dB ({sel.get('attack')} {sel.get('label', '')}, "
                     f"match {sel.get('match')})")
    return lines


def _f(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"
