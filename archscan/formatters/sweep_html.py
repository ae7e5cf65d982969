"""The sweep report as one self-contained HTML page: per model and defence setting the prediction
(verdict, PSNR and interval) next to the best attack, Spearman with its bootstrap interval, the
predicted-vs-achieved scatter and, per model, the curves across its defence settings (inline PNG,
matplotlib Agg; nothing external is referenced)."""
from __future__ import annotations

from html import escape

from archscan.formatters.html import CSS, VERDICT_CLASS, _figure, _img, _png, _rows


def render(rep: dict) -> str:
    rows = rep["rows"]
    table = _rows(["model", "defences", "verdict", "predicted dB", "interval", "achieved dB", "SSIM", "best attack"],
                  [(VERDICT_CLASS.get(str(r["verdict"]), ""),
                    [r["model"], ", ".join(r["defences"]) or "none", r["verdict"] or "-", _f(r["predicted_psnr"]),
                     _interval(r["psnr_interval"]), _f(r["best_psnr"]), _f(r["best_ssim"], 3), _winners(r)])
                   for r in rows], numeric=(3, 5, 6))
    parts = [f"<h1>archscan sweep: {len(rows)} model and defence settings</h1>",
             f"<p>{rep['tasks']} tasks ({rep['missing']} missing). Spearman (predicted vs achieved PSNR, both "
             f"clipped at {rep['quality_ceiling_db']} dB): <b>{escape(str(rep['spearman']))}</b>, 95% bootstrap "
             f"{escape(str(rep.get('spearman_interval')))}.</p>", "<h2>Predicted and achieved</h2>", table]
    done = [r for r in rows if r["best_psnr"] is not None and r["predicted_psnr"] is not None]
    if done:
        parts += ["<h2>Scatter</h2>", _img(scatter(done), "predicted vs achieved PSNR")]
    if any(len({tuple(r["defences"]) for r in rows if r["model"] == m}) > 1 for m in {r["model"] for r in rows}):
        parts += ["<h2>Across defence settings</h2>", _img(curves(rows), "PSNR across defence settings")]
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>archscan sweep</title><style>{CSS}</style>"
            f"</head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")


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
    return ", ".join(sorted({f"{b['attack']} {b.get('label', '')}".strip() for b in r["best"].values()}))


def _interval(v) -> str:
    return "-" if not v else f"[{v[0]:.1f}, {v[1]:.1f}]"


def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
