"""`validate --zoo manifest.toml`: predicted vs achieved across many models, Spearman correlation."""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import tomllib

from archscan.errors import InputError
from archscan.validate.run import ValidateOptions, validate


def read_manifest(path: str, include_slow: bool) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--zoo {path}: no such file")
    try:
        entries = tomllib.loads(p.read_text())["model"]
    except (tomllib.TOMLDecodeError, KeyError) as e:
        raise InputError(f"--zoo {path}: not a manifest with [[model]] tables ({e})") from e
    root = p.resolve().parent.parent if p.resolve().parent.name == "examples" else Path.cwd()
    out = []
    for e in entries:
        if include_slow or e.get("fast", True):
            spec = e["spec"] if Path(e["spec"].split(":")[0]).is_file() else str(root / e["spec"])
            out.append({**e, "resolved": spec})
    return out


# Above this PSNR a reconstruction is exact as an 8-bit image: the error is below the quantisation
# noise of 1/255 steps (MSE (1/255)^2 / 12).  Beyond it, PSNR measures float round-off (a determined
# model reaches 140-340 dB in float64 depending on conditioning), not what the attacker sees, so
# the headline correlation compares qualities clipped there; the raw one is reported beside it.
QUALITY_CEILING_DB = 10 * math.log10(12 * 255 ** 2)


def clipped(values: list[float]) -> list[float]:
    return [min(v, QUALITY_CEILING_DB) for v in values]


def spearman(xs: list[float], ys: list[float]) -> float | None:
    from scipy.stats import spearmanr
    if len(xs) < 3:
        return None
    rho = spearmanr(xs, ys).statistic
    return None if rho != rho else round(float(rho), 4)  # NaN when one side is constant


def spearman_interval(xs: list[float], ys: list[float], seed: int = 0, draws: int = 2000,
                      level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the Spearman correlation (models resampled with
    replacement; seeded, so the same data give the same interval).  None below 4 models."""
    import numpy as np
    from scipy.stats import spearmanr
    if len(xs) < 4:
        return None
    rng = np.random.default_rng([int(seed), 11])
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    rhos = []
    for _ in range(draws):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            rhos.append(spearmanr(x[i], y[i]).statistic)
    if not rhos:
        return None
    lo, hi = np.quantile(rhos, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def validate_zoo(path: str, opts: ValidateOptions, include_slow: bool = False, plot_path: str | None = None) -> dict:
    rows = []
    entries = read_manifest(path, include_slow)
    for i, e in enumerate(entries, 1):
        if sys.stderr.isatty():
            print(f"[{i}/{len(entries)}] {e['spec']}", file=sys.stderr, flush=True)
        scan_opts = dataclasses.replace(opts.scan, input_shape=tuple(e["input_shape"]),
                                        num_classes=e.get("num_classes"))
        rep = validate(e["resolved"], dataclasses.replace(opts, scan=scan_opts))
        pred = rep["prediction"] or {}
        error = (None if pred.get("predicted_psnr") is None or rep["best_psnr"] is None else
                 round(min(pred["predicted_psnr"], QUALITY_CEILING_DB) - min(rep["best_psnr"], QUALITY_CEILING_DB), 2))
        rows.append({"spec": e["spec"], "expected_chain_verdict": e.get("expected_chain_verdict"),
                     "verdict": pred.get("verdict"), "chain_verdict": pred.get("chain_verdict"),
                     "optimisation_verdict": pred.get("optimisation_verdict"), "predicted_psnr": pred.get("predicted_psnr"),
                     "leakage_score": pred.get("leakage_score"), "best_psnr": rep["best_psnr"],
                     "best_ssim": rep.get("best_ssim"), "error_db": error,
                     "selected_psnr": rep.get("selected_psnr"),
                     "best_attacks": sorted({b["attack"] for b in rep["best"].values()}),
                     "best_configurations": sorted({f"{b['attack']} {b.get('label') or ''}".strip()
                                                    for b in rep["best"].values()}),
                     "psnr_interval": pred.get("psnr_interval")})
    usable = [r for r in rows if r["predicted_psnr"] is not None and r["best_psnr"] is not None]
    pred = [r["predicted_psnr"] for r in usable]
    best = [r["best_psnr"] for r in usable]
    rho = spearman(clipped(pred), clipped(best))
    chosen = [r for r in usable if r["selected_psnr"] is not None]
    errors = [abs(r["error_db"]) for r in usable]
    within = round(sum(e <= 4.0 for e in errors) / len(errors), 3) if errors else None
    out = {"schema_version": "1.3", "within_4db": within, "kind": "zoo-validation", "manifest": path, "models": rows,
           "budget": opts.budget, "spearman": rho,
           "spearman_interval": spearman_interval(clipped(pred), clipped(best), opts.scan.seed),
           "spearman_raw": spearman(pred, best),
           "spearman_selected": spearman(clipped([r["predicted_psnr"] for r in chosen]),
                                         clipped([r["selected_psnr"] for r in chosen])),
           "spearman_leakage_score": spearman([r["leakage_score"] for r in usable], clipped(best)),
           "quality_ceiling_db": round(QUALITY_CEILING_DB, 3), "attacks": list(opts.attacks)}
    if plot_path:
        from archscan.validate.plots import zoo_scatter
        out["scatter_png"] = zoo_scatter(usable, rho, plot_path)
    return out
