#!/usr/bin/env python
"""Choose the symmetry threshold (config.SYMMETRY_DELTA) on the held-in networks, report the held-out.

    python benchmarks/symmetry_fit.py [--table benchmarks/results/zoo_table/table.json]

Reads the verdict table of ``benchmarks/zoo_table.py`` (each optimisation-view row carries the
scan's ambiguity -- the median relative gradient distance of the mirrored / shifted image -- and
its PSNR before the cap).  For a threshold delta the prediction of a row is the prior mean's PSNR
when its ambiguity is at or below delta, else the linearisation's.  Every threshold between two
consecutive held-in ambiguities gives the same held-in figures; the one chosen is the geometric
midpoint of the interval that is best on the held-in rows (most within 4 dB, then the smallest
mean error), and the held-out rows are reported at it.  Nothing here runs a model.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archscan.analysis.prior import prior_images  # noqa: E402
from archscan.analysis.scores import psnr_of  # noqa: E402
from archscan import config  # noqa: E402

CEILING = 58.9


def prior_psnr(shape=(3, 32, 32), seed: int = 0) -> float:
    X = prior_images(shape, config.PRIOR_IMAGES, seed)
    return psnr_of(float(((X - X.mean(axis=0)) ** 2).sum(axis=1).mean() / X.shape[1]))


def predicted(row: dict, delta: float, floor: float) -> float:
    if row.get("symmetry") is None:
        return row["predicted"]
    return floor if row["symmetry"] <= delta else row["unaligned"]


def figures(rows: list, delta: float, floor: float) -> dict:
    err = [min(predicted(r, delta, floor), CEILING) - min(r["achieved"], CEILING) for r in rows]
    return {"within_4db": sum(abs(e) <= 4 for e in err), "of": len(err),
            "mean_abs_db": round(statistics.mean(abs(e) for e in err), 2) if err else None}


def fit(rows: list, floor: float) -> tuple[float, tuple[float, float], dict]:
    held_in = [r for r in rows if r["set"] == "held-in" and r.get("symmetry") is not None]
    cuts = sorted({r["symmetry"] for r in held_in})
    bounds = [(lo, hi) for lo, hi in zip([cuts[0] / 2] + cuts, cuts + [cuts[-1] * 2])]
    scored = []
    for lo, hi in bounds:
        delta = math.sqrt(lo * hi)
        f = figures([r for r in rows if r["set"] == "held-in"], delta, floor)
        scored.append(((-f["within_4db"], f["mean_abs_db"], -(hi / lo)), delta, (lo, hi), f))
    _, delta, interval, f = min(scored)
    return delta, interval, f


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default=str(ROOT / "benchmarks" / "results" / "zoo_table" / "table.json"))
    args = p.parse_args(argv)
    rows = [r for r in json.loads(Path(args.table).read_text())["rows"] if r["achieved"] is not None]
    floor = prior_psnr()
    delta, (lo, hi), held_in = fit(rows, floor)
    held_out = figures([r for r in rows if r["set"] == "held-out"], delta, floor)
    print(f"prior-mean PSNR {floor:.2f} dB; held-in ambiguities separate at ({lo:.3f}, {hi:.3f}): delta = {delta:.3f}")
    print(f"held-in  within 4 dB {held_in['within_4db']}/{held_in['of']}  mean |error| {held_in['mean_abs_db']} dB")
    print(f"held-out within 4 dB {held_out['within_4db']}/{held_out['of']}  mean |error| {held_out['mean_abs_db']} dB")
    print(f"config.SYMMETRY_DELTA = {config.SYMMETRY_DELTA}")
    for r in sorted((r for r in rows if r.get("symmetry") is not None), key=lambda r: r["symmetry"]):
        print(f"  {r['model']:<22} {r['set']:<9} ambiguity {r['symmetry']:.3f}  unaligned {r['unaligned']:.1f}  "
              f"predicted {predicted(r, delta, floor):.1f}  achieved {r['achieved']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
