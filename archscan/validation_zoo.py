"""`validate --zoo manifest.toml`: predicted vs achieved across many models, Spearman correlation."""
from __future__ import annotations

import dataclasses
import sys
import tomllib
from pathlib import Path

from .errors import InputError
from .validation import ValidateOptions, validate


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


def spearman(xs: list[float], ys: list[float]) -> float | None:
    from scipy.stats import spearmanr
    if len(xs) < 3:
        return None
    rho = spearmanr(xs, ys).statistic
    return None if rho != rho else round(float(rho), 4)  # NaN when one side is constant


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
        rows.append({"spec": e["spec"], "expected_verdict": e.get("expected_verdict"),
                     "verdict": pred.get("verdict"), "predicted_psnr": pred.get("predicted_psnr"),
                     "leakage_score": pred.get("leakage_score"), "best_psnr": rep["best_psnr"],
                     "best_attacks": sorted({b["attack"] for b in rep["best"].values()})})
    usable = [r for r in rows if r["predicted_psnr"] is not None and r["best_psnr"] is not None]
    rho = spearman([r["predicted_psnr"] for r in usable], [r["best_psnr"] for r in usable])
    rho_score = spearman([r["leakage_score"] for r in usable], [r["best_psnr"] for r in usable])
    out = {"schema_version": "1.0", "kind": "zoo-validation", "manifest": path, "models": rows,
           "spearman": rho, "spearman_leakage_score": rho_score, "attacks": list(opts.attacks)}
    if plot_path:
        from .validation_plots import zoo_scatter
        out["scatter_png"] = zoo_scatter(usable, rho, plot_path)
    return out
