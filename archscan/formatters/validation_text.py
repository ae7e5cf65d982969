"""validate's report as plain text: per attack and image (or, tuned, the oracle and the
objective-selected configuration), the prediction next to the best achieved, the threat model; a
zoo report as one row per model with Spearman and its interval."""
from __future__ import annotations

from archscan.defences import spelled
from archscan.fedavg import suffix


def render(report: dict) -> str:
    if report.get("kind") == "zoo-validation":
        lines = [f"{'model':<30} {'chain':<10} {'optimis.':<10} {'verdict':<10} {'pred dB':>8} {'best dB':>8} "
                 f"{'SSIM':>5} {'err':>6} {'sel dB':>7}  best attack"]
        for r in report["models"]:
            lines.append(f"{r['spec'].split('/')[-1]:<30} {str(r.get('chain_verdict')):<10} "
                         f"{str(r.get('optimisation_verdict')):<10} {str(r['verdict']):<10} "
                         f"{_f(r['predicted_psnr'], 1):>8} {_f(r['best_psnr'], 1):>8} {_f(r.get('best_ssim'), 2):>5} "
                         f"{_f(r.get('error_db'), 1):>6} {_f(r.get('selected_psnr'), 1):>7}  {','.join(r['best_attacks'])}")
        lines.append(f"within 4 dB (clipped): {report.get('within_4db')}")
        lines.append(f"Spearman (predicted vs best achieved PSNR, both clipped at the 8-bit ceiling "
                     f"{report['quality_ceiling_db']} dB): {report['spearman']} "
                     f"[95% bootstrap {report.get('spearman_interval')}]  (unclipped: "
                     f"{report['spearman_raw']}; against the objective-selected PSNR: "
                     f"{report.get('spearman_selected')})")
        return "\n".join(lines) + "\n"
    pred = report["prediction"] or {}
    if report.get("budget"):
        lines = _render_tuned(report)
    else:
        lines = [f"{'attack':<9} {'image':<22} {'PSNR dB':>8} {'SSIM':>6} {'s/img':>7}"]
        lines += [f"{r['attack']:<9} {r['image']:<22} {r['psnr']:>8.2f} {r['ssim']:>6.3f} {r['seconds']:>7.3f}"
                  for r in report["results"]]
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
    return "\n".join(lines) + "\n"


def _render_tuned(report: dict) -> list:
    """Per attack and image: the oracle-best and the objective-selected configuration."""
    lines = [f"budget {report['budget']}: every configuration's PSNR, SSIM, objective, match and seconds are in "
             f"--format json",
             f"{'attack':<8} {'configs':>7} {'image':<20} {'oracle dB':>9}  {'oracle configuration':<34} "
             f"{'selected dB':>11}  selected configuration"]
    for a in report["attacks"]:
        if a.get("skipped") or "oracle" not in a:
            continue
        for image, o in a["oracle"].items():
            sel = a["selected"].get(image, {})
            lines.append(f"{a['attack']:<8} {a['configurations']:>7} {image:<20} {o['psnr']:>9.2f}  "
                         f"{o['label'][:34]:<34} {_f(sel.get('psnr'), 2):>11}  {sel.get('label', '-')}")
    for image, b in report["best"].items():
        sel = report["selected"].get(image, {})
        lines.append(f"best     {image}: oracle {b['psnr']:.2f} dB ({b['attack']} {b.get('label', '')}), "
                     f"selected {_f(sel.get('psnr'), 2)} dB ({sel.get('attack')} {sel.get('label', '')}, "
                     f"match {sel.get('match')})")
    return lines


def _f(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"
