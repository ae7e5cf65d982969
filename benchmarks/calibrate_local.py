"""Calibrate the optimisation view (tau, threshold reference, functional) against the strongest
attacks archscan runs -- one command:

    python benchmarks/calibrate_local.py --results calib/attacks -o calib/        # attacks cached there
    python benchmarks/calibrate_local.py --run-attacks --budget default -o calib/  # run them first

For every manifest model marked ``calibration = "held-in" | "held-out"``: the tuned attacks' best
PSNR per image (``validate --budget``; oracle best by default, ``--selected`` for the attacker's
own choice), scan's chain prediction (``--local off``), and a Lanczos run at each attacked image
(cached in ``-o``).  The fit chooses on the held-in models and reports the held-out ones at the
same setting; the table and ``calibration.json`` go to ``-o``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tomllib
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from archscan.config import ScanOptions  # noqa: E402
from archscan.pipeline import scan  # noqa: E402
from archscan.validate import calibration as cal  # noqa: E402
from archscan.validate.run import ValidateOptions, load_batch, load_seeded, validate  # noqa: E402


def entries(manifest: Path) -> list[dict]:
    return [m for m in tomllib.loads(manifest.read_text())["model"] if m.get("calibration")]


def _opts(entry: dict, args) -> ValidateOptions:
    scan_opts = ScanOptions(input_shape=tuple(entry["input_shape"]), num_classes=entry.get("num_classes"),
                            seed=args.seed, local="off")
    return ValidateOptions(scan=scan_opts, n_images=args.images, budget=args.budget)


def attacks(entry: dict, args) -> dict:
    """The validate report of ``entry`` (cached as RESULTS/NAME/report.json)."""
    name = entry["spec"].split(":")[-1]
    path = Path(args.results) / name / "report.json"
    if path.is_file():
        return json.loads(path.read_text())
    if not args.run_attacks:
        raise SystemExit(f"{path}: no attack results (give --run-attacks to run them)")
    report = validate(str(ROOT / entry["spec"]), _opts(entry, args))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return report


def spectrum(entry: dict, report: dict, args) -> dict:
    """The Lanczos run at the attacked images (cached as OUT/NAME.spectrum.json)."""
    name = entry["spec"].split(":")[-1]
    path = Path(args.output) / f"{name}.spectrum.json"
    if path.is_file():
        return {k: cal.run_from_dict(v) for k, v in json.loads(path.read_text()).items()}
    opts = _opts(entry, args)
    opts = dataclasses.replace(opts, n_images=len(report["images"]["names"]))
    images, _ = load_batch(opts, opts.scan.input_shape)
    model = load_seeded(str(ROOT / entry["spec"]), opts)
    with torch.no_grad():
        classes = model(images[:1]).shape[-1]
    runs = cal.spectra_at_images(model, images, np.arange(len(images)) % classes, args.seed, args.steps)
    path.write_text(json.dumps({k: cal.run_to_dict(v) for k, v in runs.items()}))
    return runs


def row(entry: dict, args) -> dict:
    report = attacks(entry, args)
    best = report["selected"] if args.selected else report["best"]
    chain = scan(str(ROOT / entry["spec"]), _opts(entry, args).scan).to_dict()["scores"]["chain"]
    prior = [r["psnr"] for r in report["results"] if r["attack"] == "prior"]
    return {"prior_psnr": float(np.median(prior)) if prior else None,"model": entry["spec"].split(":")[-1], "calibration": entry["calibration"],
            "achieved_psnr": float(np.median([b["psnr"] for b in best.values()])),
            "winner": sorted({b.get("label") or b["attack"] for b in best.values()}),
            "chain_psnr": chain["predicted_psnr"], "runs": spectrum(entry, report, args)}


def with_scan(rows: list[dict], args) -> None:
    """Each row's default scan (the calibrated optimisation view as configured) beside it."""
    for r, e in zip(rows, args.entries):
        opts = dataclasses.replace(_opts(e, args).scan, local="auto")
        s = scan(str(ROOT / e["spec"]), opts).to_dict()["scores"]
        r["scan"] = {"verdict": s["verdict"], "chain_verdict": s["chain"]["verdict"],
                     "optimisation_verdict": s["optimisation"]["verdict"], "predicted_psnr": s["predicted_psnr"],
                     "psnr_interval": s["optimisation"].get("psnr_interval")}


def scan_table(rows: list[dict]) -> str:
    lines = [f"{'model':<24} {'set':<9} {'chain':<10} {'optimisation':<12} {'verdict':<10} {'predicted':>9} "
             f"{'achieved':>8} {'prior':>6}  attack"]
    for r in rows:
        s = r["scan"]
        lines.append(f"{r['model']:<24} {r['calibration']:<9} {s['chain_verdict']:<10} {str(s['optimisation_verdict']):<12} "
                     f"{s['verdict']:<10} {s['predicted_psnr']:>9.1f} {r['achieved_psnr']:>8.1f} {r['prior_psnr'] or 0:>6.1f}  "
                     f"{', '.join(r['winner'])}")
    return "\n".join(lines)


def table(rows: list[dict], chosen: dict) -> str:
    t, ref, f = chosen["tau"], chosen["reference"], chosen["functional"]
    lines = [f"{'model':<24} {'set':<9} {'predicted':>9} {'achieved':>9} {'error':>6}  attack"]
    for r in rows:
        p = cal.model_prediction(r, t, ref, f)
        lines.append(f"{r['model']:<24} {r['calibration']:<9} {p:>9.1f} {r['achieved_psnr']:>9.1f} "
                     f"{min(p, cal.QUALITY_CEILING_DB) - min(r['achieved_psnr'], cal.QUALITY_CEILING_DB):>6.1f}  "
                     f"{', '.join(r['winner'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default=str(ROOT / "examples" / "manifest.toml"))
    p.add_argument("--results", default="calib/attacks", help="validate reports, one folder per model")
    p.add_argument("--run-attacks", action="store_true", help="run the tuned attacks where no report is cached")
    p.add_argument("--budget", default="default", help="validate --budget for --run-attacks")
    p.add_argument("--skip-missing", action="store_true", help="leave out models without cached attack results")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME", help="leave out this model (repeatable)")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--selected", action="store_true", help="calibrate to the objective-selected best, not the oracle")
    p.add_argument("--steps", type=int, default=60, help="Lanczos steps per attacked image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="calib")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    chosen = [e for e in entries(Path(args.manifest)) if e["spec"].split(":")[-1] not in args.exclude
              and (args.run_attacks or not args.skip_missing
                   or (Path(args.results) / e["spec"].split(":")[-1] / "report.json").is_file())]
    rows = [row(e, args) for e in chosen]
    fit = cal.fit(rows)
    args.entries = chosen
    with_scan(rows, args)
    fit["scan"] = {"all": cal.scan_agreement(rows),
                   "held_in": cal.scan_agreement([r for r in rows if r["calibration"] == "held-in"]),
                   "held_out": cal.scan_agreement([r for r in rows if r["calibration"] == "held-out"])}
    text = table(rows, fit["chosen"])
    summary = {k: fit[k] for k in ("chosen", "held_out", "current", "scan")}
    Path(args.output, "calibration.json").write_text(json.dumps({**fit, "rows": [
        {k: v for k, v in r.items() if k != "runs"} for r in rows]}, indent=1))
    print(text)
    print()
    print(scan_table(rows))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "errors"} if "tau" in v else
                      {s: {kk: vv for kk, vv in sv.items() if kk != "errors"} for s, sv in v.items()}
                      for k, v in summary.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
