"""validate's report as GitHub-flavoured Markdown (a CI step summary, a PR comment): the prediction
next to what the attacks achieved, the best attack and configuration per image, what was skipped;
a zoo report as one row per model with Spearman and its bootstrap interval."""
from __future__ import annotations

from archscan.defences import threat_suffix
from archscan.formatters.markdown import ICON, _table
from archscan.formatters.validation_html import _f


def render(report: dict) -> str:
    parts = _zoo(report) if report.get("kind") == "zoo-validation" else _one(report)
    return "\n\n".join(p for p in parts if p) + "\n"


def _one(report: dict) -> list:
    pred, t = report.get("prediction") or {}, report["threat_model"]
    verdict = pred.get("verdict")
    head = f"## archscan validate: `{report['model']['spec']}` — {ICON.get(str(verdict), '')} {verdict or 'no prediction'}"
    summary = _table(("", "PSNR dB", "detail"), [
        ("predicted", _f(pred.get("predicted_psnr")), f"{verdict}, leakage score {pred.get('leakage_score')}"
         if pred else f"n/a ({report.get('prediction_skipped')})"),
        ("achieved (oracle best)", _f(report.get("best_psnr")), f"SSIM {_f(report.get('best_ssim'), 3)}, median over images"),
        ("objective-selected", _f(report.get("selected_psnr")), "lowest gradient match, no true image needed")])
    best = _table(("image", "PSNR dB", "SSIM", "attack", "configuration"),
                  [(n, _f(b["psnr"], 2), _f(b["ssim"], 3), b["attack"], f"`{b.get('label') or 'default'}`")
                   for n, b in report["best"].items()])
    skipped = "\n".join(f"- **{a['attack']}** skipped: {a['skipped']}" for a in report["attacks"] if a.get("skipped"))
    foot = (f"<sub>threat model: batch {t['batch_size']}, labels {t['labels']}, BatchNorm {t['bn_mode']}, seed "
            f"{t['seed']}{threat_suffix(t.get('defences'), t.get('fedavg'))}; device {report['device']}</sub>")
    return [head, summary, "### Best per image", best, skipped, foot]


def _zoo(report: dict) -> list:
    head = f"## archscan validate --zoo: {len(report['models'])} models of `{report['manifest']}`"
    rows = [(f"`{r['spec'].split('/')[-1]}`", f"{ICON.get(str(r['verdict']), '')} {r['verdict']}",
             _f(r["predicted_psnr"]), _f(r["best_psnr"]), _f(r.get("error_db")),
             ", ".join(r.get("best_configurations") or r["best_attacks"])) for r in report["models"]]
    table = _table(("model", "verdict", "predicted dB", "achieved dB", "error dB", "best attack"), rows)
    stats = (f"Within 4 dB: **{report.get('within_4db')}**. Spearman (predicted vs achieved, clipped at "
             f"{report['quality_ceiling_db']} dB): **{report['spearman']}**, 95% bootstrap "
             f"{report.get('spearman_interval')}.")
    return [head, table, stats]
