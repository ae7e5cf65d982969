"""What tuning buys: Inverting Gradients' fixed default configuration vs the best of its
``--budget default`` grid, per model, from cached validate reports -- one command:

    python benchmarks/tuning_gain.py benchmarks/results/calibration/attacks

Each report's grid holds the default configuration as ``ig#0`` (run on the same seed and images),
so the gain is measured in the same run.  Medians over the images; the oracle best per image over
the grid, and over every attack (``best``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def gains(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*/report.json")):
        rep = json.loads(path.read_text())
        ig = [r for r in rep["results"] if r["attack"] == "ig"]
        default = [r["psnr"] for r in ig if r.get("config") == "ig#0"]
        if not default:
            continue
        per_image: dict = {}
        for r in ig:
            per_image[r["image"]] = max(per_image.get(r["image"], -1e9), r["psnr"])
        d, t = statistics.median(default), statistics.median(per_image.values())
        rows.append({"model": path.parent.name, "default": d, "tuned": t, "gain": t - d, "best": rep["best_psnr"],
                     "configurations": next(a["configurations"] for a in rep["attacks"] if a["attack"] == "ig")})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="validate reports, one folder per model (NAME/report.json)")
    args = p.parse_args(argv)
    rows = gains(Path(args.folder))
    print(f"{'model':<22} {'IG default':>10} {'IG tuned':>9} {'gain':>6} {'best of all':>11} {'configs':>7}")
    for r in rows:
        print(f"{r['model']:<22} {r['default']:>10.1f} {r['tuned']:>9.1f} {r['gain']:>+6.1f} {r['best']:>11.1f} "
              f"{r['configurations']:>7}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
