"""Predicted vs achieved PSNR across a DP-SGD noise sweep (and FedAvg local steps) -- one command:

    python benchmarks/dp_sweep.py -o benchmarks/results/dp_sweep                 # the README table
    python benchmarks/dp_sweep.py --models cnn_relu --sigmas 0,1e-3 --budget fast -o /tmp/dp   # a quick look
    python benchmarks/dp_sweep.py --sigmas 0 --fedavg-steps 1,3,10 --fedavg-lr 0.1 --budget fast \
        -o benchmarks/results/fedavg_sweep                                       # the README's FedAvg table

For every model and noise multiplier sigma: ``archscan validate MODEL --defence dp:sigma=S,clip=C``
(the prediction is scan's, with the noise in the optimisation view; the attacks run on the noisy,
clipped update, tuned over ``--budget``'s grid, oracle best per image).  With ``--fedavg-steps``
every noise level is crossed with each number of local SGD steps (``--fedavg-steps E --fedavg-lr``:
the client shares its weight change; scan differentiates through the steps, the optimisation attacks
simulate them).  Each report is cached as OUT/MODEL/sigma=S[/steps=E,lr=L]/report.json, so an
interrupted sweep resumes; the table (``table.txt``) and ``sweep.json`` are a pure function of the
cached reports.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tomllib
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from archscan.config import ScanOptions  # noqa: E402
from archscan.defences import parse_defence  # noqa: E402
from archscan.fedavg import LocalSteps  # noqa: E402
from archscan.validate.run import ValidateOptions, validate  # noqa: E402


def manifest_entry(name: str) -> dict:
    models = tomllib.loads((ROOT / "examples" / "manifest.toml").read_text())["model"]
    for m in models:
        if m["spec"].split(":")[-1] == name:
            return m
    raise SystemExit(f"{name}: not in examples/manifest.toml")


def defence_text(sigma: float, clip: float) -> str:
    return f"dp:sigma={sigma:g},clip={clip:g}"


def one(entry: dict, sigma: float, steps: int, args) -> dict:
    """The validate report of ``entry`` at noise ``sigma`` and ``steps`` local steps (cached)."""
    name = entry["spec"].split(":")[-1]
    folder = Path(args.output) / name / f"sigma={sigma:g}"
    path = (folder if steps == 1 else folder / f"steps={steps},lr={args.fedavg_lr:g}") / "report.json"
    if path.is_file():
        return json.loads(path.read_text())
    defences = (parse_defence(defence_text(sigma, args.clip)),) if sigma > 0 else ()
    scan = ScanOptions(input_shape=tuple(entry["input_shape"]), num_classes=entry.get("num_classes"),
                       seed=args.seed, defences=defences, fedavg=LocalSteps(steps, args.fedavg_lr))
    opts = ValidateOptions(scan=scan, attacks=tuple(args.attacks.split(",")), n_images=args.images,
                           budget=args.budget)
    report = validate(str(ROOT / entry["spec"]), opts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return report


def row(name: str, sigma: float, steps: int, report: dict) -> dict:
    pred = report["prediction"] or {}
    best = report["best"]
    winners = sorted({f"{b['attack']} {b.get('label', '')}".strip() for b in best.values()})
    return {"model": name, "sigma": sigma, "steps": steps, "verdict": pred.get("verdict"),
            "predicted": pred.get("predicted_psnr"), "interval": pred.get("psnr_interval"),
            "achieved": report["best_psnr"], "ssim": report["best_ssim"],
            "prior": statistics.median(r["psnr"] for r in report["results"] if r["attack"] == "prior"),
            "attack": ", ".join(winners)}


def table(rows: list) -> str:
    steps = any(r.get("steps", 1) > 1 for r in rows)
    head = f"{'model':<12} {'sigma':>8} " + (f"{'E':>4} " if steps else "") + f"{'verdict':<11} {'predicted':>9} {'interval':>15} {'achieved':>8} {'SSIM':>6} " \
           f"{'prior':>6}  attack"
    lines = [head]
    for r in rows:
        iv = "" if not r["interval"] else f"[{r['interval'][0]:.1f}, {r['interval'][1]:.1f}]"
        e = f"{r.get('steps', 1):>4} " if steps else ""
        lines.append(f"{r['model']:<12} {r['sigma']:>8g} {e}{r['verdict'] or '-':<11} {r['predicted']:>9.1f} {iv:>15} "
                     f"{r['achieved']:>8.1f} {r['ssim']:>6.3f} {r['prior']:>6.1f}  {r['attack']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn_relu,lenet5")
    p.add_argument("--sigmas", default="0,1e-4,1e-3,1e-2,1e-1")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--attacks", default="prior,ig")
    p.add_argument("--budget", default="default")
    p.add_argument("--fedavg-steps", default="1", help="comma-separated local SGD step counts (1: one gradient)")
    p.add_argument("--fedavg-lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.models.split(","):
        entry = manifest_entry(name)
        for sigma in (float(s) for s in args.sigmas.split(",")):
            for steps in (int(e) for e in args.fedavg_steps.split(",")):
                rows.append(row(name, sigma, steps, one(entry, sigma, steps, args)))
                print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    out = Path(args.output)
    (out / "sweep.json").write_text(json.dumps({"clip": args.clip, "budget": args.budget, "fedavg_lr": args.fedavg_lr,
                                                "rows": rows}, indent=1))
    (out / "table.txt").write_text(table(rows))
    sys.stdout.write(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
