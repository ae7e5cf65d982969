"""The verdict table over the examples zoo and the real-style models: default scan vs the
strongest attack run on each -- one command:

    python benchmarks/zoo_table.py -o benchmarks/results/zoo_table

Per model of ``examples/manifest.toml`` (``fast = true``): the default scan (both views; cached as
OUT/scans/NAME.json) and the best PSNR per image of the attacks, median over 2 bundled photos
(clipped at the 8-bit ceiling 58.9 dB, like the prediction): the tuned attacks of the calibration
run where they exist (``--calibration``, default ``benchmarks/results/calibration/attacks``), else
the closed-form attacks (prior, analytic, rgap, april; cached as OUT/attacks/NAME/report.json) for
models whose chain determines the image -- they reconstruct it exactly, so no optimisation attack
can do better.  Models with neither are listed with the reason, not guessed.  Writes table.txt and
table.json: within 4 dB, mean error, Spearman, and any model called RESISTANT that an attack beat
by >= 3 dB above the prior.
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
from archscan.pipeline import scan  # noqa: E402
from archscan.validate.run import ValidateOptions, validate  # noqa: E402
from archscan.validate.zoo import QUALITY_CEILING_DB, clipped, spearman, spearman_interval  # noqa: E402

CLOSED_FORM = ("prior", "analytic", "rgap", "april")


def cached(path: Path, make):
    if path.is_file():
        return json.loads(path.read_text())
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return value


def prediction(entry: dict, out: Path, seed: int) -> dict:
    name = entry["spec"].split(":")[-1]

    def run():
        opts = ScanOptions(input_shape=tuple(entry["input_shape"]), num_classes=entry.get("num_classes"), seed=seed)
        rep = scan(str(ROOT / entry["spec"]), opts).to_dict()
        s = rep["scores"]
        return {"verdict": s["verdict"], "chain": s["chain"]["verdict"], "optimisation": s["optimisation"]["verdict"],
                "optimisation_status": s["optimisation"]["status"], "predicted_psnr": s["predicted_psnr"],
                "psnr_interval": s["optimisation"].get("psnr_interval"), "seconds": rep["timing"]["total_s"],
                "symmetry": (s["optimisation"].get("symmetry") or {}).get("ambiguity"),
                "psnr_unaligned": s["optimisation"].get("psnr_unaligned", s["predicted_psnr"])}
    return cached(out / "scans" / f"{name}.json", run)


def attacks(entry: dict, pred: dict, args) -> tuple[dict | None, str]:
    """(validate report, where it came from) or (None, why not)."""
    name = entry["spec"].split(":")[-1]
    tuned = Path(args.calibration) / name / "report.json"
    if tuned.is_file():
        return json.loads(tuned.read_text()), "tuned (calibration run)"
    if pred["chain"] != "LEAKS":
        return None, "no tuned attack results (optimisation attacks beyond this machine's budget)"

    def run():
        scan_opts = ScanOptions(input_shape=tuple(entry["input_shape"]), num_classes=entry.get("num_classes"),
                                seed=args.seed, local="off")
        return validate(str(ROOT / entry["spec"]), ValidateOptions(scan=scan_opts, attacks=CLOSED_FORM,
                                                                  n_images=args.images))
    return cached(Path(args.output) / "attacks" / name / "report.json", run), "closed form"


def row(entry: dict, args) -> dict:
    name = entry["spec"].split(":")[-1]
    pred = prediction(entry, Path(args.output), args.seed)
    rep, source = attacks(entry, pred, args)
    r = {"model": name, "set": entry.get("calibration", "-"), "chain": pred["chain"],
         "optimisation": pred["optimisation"] or pred["optimisation_status"], "verdict": pred["verdict"],
         "predicted": pred["predicted_psnr"], "scan_s": pred["seconds"], "source": source,
         "symmetry": pred.get("symmetry"), "unaligned": pred.get("psnr_unaligned")}
    if rep is None:
        return {**r, "achieved": None, "prior": None, "attack": None}
    best = rep["best"]
    prior = statistics.median(x["psnr"] for x in rep["results"] if x["attack"] == "prior")
    winners = sorted({f"{b['attack']} {b.get('label', '')}".strip() for b in best.values()})
    return {**r, "achieved": rep["best_psnr"], "prior": prior, "attack": ", ".join(winners)}


def summary(rows: list) -> dict:
    usable = [r for r in rows if r["achieved"] is not None and r["predicted"] is not None]
    err = [min(r["predicted"], QUALITY_CEILING_DB) - min(r["achieved"], QUALITY_CEILING_DB) for r in usable]
    return {"models": len(usable), "not_attacked": [r["model"] for r in rows if r["achieved"] is None],
            "within_4db": sum(abs(e) <= 4 for e in err), "mean_abs_db": round(statistics.mean(abs(e) for e in err), 2) if err else None,
            "misses": {r["model"]: round(e, 1) for r, e in zip(usable, err) if abs(e) > 4},
            "spearman": spearman(clipped([r["predicted"] for r in usable]), clipped([r["achieved"] for r in usable])),
            "spearman_interval": spearman_interval(clipped([r["predicted"] for r in usable]),
                                                   clipped([r["achieved"] for r in usable])),
            "resistant_but_reconstructed": [r["model"] for r in usable if r["verdict"] == "RESISTANT"
                                            and r["achieved"] >= r["prior"] + 3]}


def render(rows: list, s: dict) -> str:
    head = (f"{'model':<22} {'set':<9} {'chain':<10} {'optimis.':<11} {'verdict':<10} {'pred':>6} {'achieved':>8} "
            f"{'scan s':>6}  attack")
    lines = [head]
    for r in rows:
        a = "-" if r["achieved"] is None else f"{min(r['achieved'], QUALITY_CEILING_DB):.1f}"
        lines.append(f"{r['model']:<22} {r['set']:<9} {r['chain']:<10} {str(r['optimisation']):<11} {r['verdict']:<10} "
                     f"{min(r['predicted'], QUALITY_CEILING_DB):>6.1f} {a:>8} {r['scan_s']:>6.0f}  "
                     f"{r['attack'] or r['source']}")
    lines.append(f"within 4 dB: {s['within_4db']}/{s['models']}  mean |error| {s['mean_abs_db']} dB  "
                 f"Spearman {s['spearman']} (95% bootstrap {s['spearman_interval']})  misses {s['misses']}")
    lines.append(f"RESISTANT but reconstructed >= 3 dB above the prior: {s['resistant_but_reconstructed'] or 'none'}; "
                 f"not attacked: {', '.join(s['not_attacked']) or 'none'}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default=str(ROOT / "examples" / "manifest.toml"))
    p.add_argument("--calibration", default=str(ROOT / "benchmarks" / "results" / "calibration" / "attacks"))
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    entries = [m for m in tomllib.loads(Path(args.manifest).read_text())["model"] if m.get("fast", True)]
    rows = []
    for e in entries:
        rows.append(row(e, args))
        r = rows[-1]
        print(f"{r['model']}: {r['verdict']} predicted {r['predicted']} achieved {r['achieved']}", file=sys.stderr,
              flush=True)
    s = summary(rows)
    out = Path(args.output)
    (out / "table.json").write_text(json.dumps({"rows": rows, "summary": s}, indent=1))
    (out / "table.txt").write_text(render(rows, s))
    sys.stdout.write(render(rows, s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
