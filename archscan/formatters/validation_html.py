"""validate's and sweep's reports as self-contained HTML pages (inline PNG, matplotlib Agg; nothing
external is referenced).

* a sweep or a zoo (``validate --zoo``): per model (and defence setting) the prediction (verdict,
  PSNR and interval) next to the best attack and its configuration, Spearman with its bootstrap
  interval, the predicted-vs-achieved scatter and, per model, the curves across its defence settings;
* one model (``validate MODEL``): the prediction, every attack's result per image, the best per
  image with its configuration, what was skipped and why, and the reconstruction grid.
"""
from __future__ import annotations

from html import escape

from archscan.defences import threat_suffix
from archscan.formatters.html import CSS, VERDICT_CLASS, _figure, _img, _png, _rows, grid_bytes


def render(rep: dict) -> str:
    """The page of a sweep report, a zoo report or one model's validation report."""
    if rep.get("kind") == "zoo-validation":
        return _comparison_page("archscan validate --zoo", zoo_rows(rep), rep,
                                f"{len(rep['models'])} models of {escape(str(rep['manifest']))}; attacks "
                                f"{escape(', '.join(rep['attacks']))}, budget {escape(str(rep.get('budget')))}; "
                                f"within 4 dB: {escape(str(rep.get('within_4db')))}.")
    if rep.get("kind") == "validation":
        return _validation_page(rep)
    return _comparison_page("archscan sweep", rep["rows"], rep, f"{rep['tasks']} tasks ({rep['missing']} missing).")


def zoo_rows(rep: dict) -> list:
    """A zoo report's models as comparison rows (one setting each: the run's threat model)."""
    return [{"model": r["spec"].split("/")[-1], "defences": [], "verdict": r["verdict"],
             "predicted_psnr": r["predicted_psnr"], "psnr_interval": r.get("psnr_interval"),
             "best_psnr": r["best_psnr"], "best_ssim": r.get("best_ssim"),
             "winners": ", ".join(r.get("best_configurations") or r["best_attacks"])} for r in rep["models"]]


def _comparison_page(title: str, rows: list, rep: dict, intro: str) -> str:
    table = _rows(["model", "defences", "verdict", "predicted dB", "interval", "achieved dB", "SSIM", "best attack"],
                  [(VERDICT_CLASS.get(str(r["verdict"]), ""),
                    [r["model"], ", ".join(r["defences"]) or "none", r["verdict"] or "-", _f(r["predicted_psnr"]),
                     _interval(r["psnr_interval"]), _f(r["best_psnr"]), _f(r["best_ssim"], 3), _winners(r)])
                   for r in rows], numeric=(3, 5, 6))
    parts = [f"<h1>{escape(title)}: {len(rows)} model and defence settings</h1>",
             f"<p>{intro} Spearman (predicted vs achieved PSNR, both "
             f"clipped at {rep['quality_ceiling_db']} dB): <b>{escape(str(rep['spearman']))}</b>, 95% bootstrap "
             f"{escape(str(rep.get('spearman_interval')))}.</p>", "<h2>Predicted and achieved</h2>", table]
    done = [r for r in rows if r["best_psnr"] is not None and r["predicted_psnr"] is not None]
    if done:
        parts += ["<h2>Scatter</h2>", _img(scatter(done), "predicted vs achieved PSNR")]
    if any(len({tuple(r["defences"]) for r in rows if r["model"] == m}) > 1 for m in {r["model"] for r in rows}):
        parts += ["<h2>Across defence settings</h2>", _img(curves(rows), "PSNR across defence settings")]
    return _page(title, parts)


def _page(title: str, parts: list) -> str:
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{CSS}</style>"
            f"</head>\n<body>\n" + "\n".join(p for p in parts if p) + "\n</body></html>\n")


def _validation_page(rep: dict) -> str:
    pred, t = rep.get("prediction") or {}, rep["threat_model"]
    verdict = pred.get("verdict")
    summary = _rows(["", ""], [("", row) for row in (
        ("predicted", f"{verdict or 'n/a'}, leakage score {pred.get('leakage_score')}, PSNR "
                      f"{_f(pred.get('predicted_psnr'))} dB {_interval(pred.get('psnr_interval'))}"
         if pred else f"n/a ({rep.get('prediction_skipped')})"),
        ("achieved", f"best PSNR {_f(rep.get('best_psnr'), 2)} dB, SSIM {_f(rep.get('best_ssim'), 3)} (median over "
                     f"images of the best attack and configuration) on {rep['device']}"),
        ("objective-selected", f"{_f(rep.get('selected_psnr'), 2)} dB (lowest gradient match, no true image needed)"),
        ("threat model", f"batch {t['batch_size']}, labels {t['labels']}, BatchNorm {t['bn_mode']}, seed {t['seed']}"
                         f"{threat_suffix(t.get('defences'), t.get('fedavg'))}"))])
    best = _rows(["image", "PSNR dB", "SSIM", "attack", "configuration"],
                 [("", [n, _f(b["psnr"], 2), _f(b["ssim"], 3), b["attack"], b.get("label") or "default"])
                  for n, b in rep["best"].items()], numeric=(1, 2))
    results = _rows(["attack", "configuration", "image", "PSNR dB", "SSIM", "match", "s/img"],
                    [("", [r["attack"], r.get("label") or "default", r["image"], _f(r["psnr"], 2), _f(r["ssim"], 3),
                           _f(r.get("match"), 4), _f(r.get("seconds"), 3)]) for r in rep["results"]],
                    numeric=(3, 4, 5, 6))
    skipped = "".join(f"<li><b>{escape(a['attack'])}</b>: {escape(str(a['skipped']))}</li>"
                      for a in rep["attacks"] if a.get("skipped"))
    png = grid_bytes(rep.get("grid_png"))
    title = f"archscan validate: {rep['model']['spec']}"
    badge = f"<p><span class='badge {VERDICT_CLASS.get(str(verdict), '')}'>{escape(str(verdict))}</span></p>"
    return _page(title, [f"<h1>{escape(title)}</h1>", badge if verdict else "", summary,
                         "<h2>Best per image</h2>", best,
                         ("<h2>Reconstructions</h2>" + _img(png, "original vs reconstructions")) if png else "",
                         "<h2>Every result</h2>", results, f"<h2>Skipped</h2><ul>{skipped}</ul>" if skipped else ""])


def scatter(rows: list) -> bytes:
    fig = _figure(4.8, 4.2)
    ax = fig.add_subplot()
    for r in rows:
        ax.scatter(r["predicted_psnr"], r["best_psnr"], color=_colour(r["verdict"]))
        ax.annotate(f"{r['model']} {', '.join(r['defences'])}".strip(), (r["predicted_psnr"], r["best_psnr"]),
                    fontsize=6)
    lo = min(min(r["predicted_psnr"], r["best_psnr"]) for r in rows)
    hi = max(max(r["predicted_psnr"], r["best_psnr"]) for r in rows)
    ax.plot([lo, hi], [lo, hi], color="#999", linewidth=0.8)
    ax.set_xlabel("predicted PSNR (dB, scan)")
    ax.set_ylabel("best achieved PSNR (dB, attacks)")
    return _png(fig)


def curves(rows: list) -> bytes:
    models = sorted({r["model"] for r in rows})
    fig = _figure(4.2 * len(models), 3.4)
    for i, m in enumerate(models, 1):
        mine = [r for r in rows if r["model"] == m]
        ax = fig.add_subplot(1, len(models), i)
        x = list(range(len(mine)))
        ax.plot(x, [r["predicted_psnr"] for r in mine], marker="o", label="predicted")
        ax.plot(x, [r["best_psnr"] for r in mine], marker="s", label="achieved")
        ax.set_xticks(x, [", ".join(r["defences"]) or "none" for r in mine], rotation=30, ha="right", fontsize=6)
        ax.set_title(m, fontsize=9)
        ax.set_ylabel("PSNR (dB)")
        ax.legend(fontsize=7)
    return _png(fig)


def _colour(verdict) -> str:
    return {"bad": "#c62828", "warn": "#ef6c00", "good": "#2e7d32", "unverified": "#6a1b9a"}.get(
        VERDICT_CLASS.get(str(verdict), ""), "#555")


def _winners(r: dict) -> str:
    if "winners" in r:
        return r["winners"]
    return ", ".join(sorted({f"{b['attack']} {b.get('label', '')}".strip() for b in r["best"].values()}))


def _interval(v) -> str:
    return "-" if not v else f"[{v[0]:.1f}, {v[1]:.1f}]"


def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
