#!/usr/bin/env python
"""Whole-process time of a first scan against ``python -c "import torch"`` on the same machine, in
the same run (a ratio, never a timed test).

Usage:  python benchmarks/first_scan.py [--model examples/paper_zoo.py:cnn6_d] [--repeats 3]

Each command runs in a fresh process (best of ``--repeats``, numba's cache warm: the first call of
this script warms it, and the prior images' cache, archscan.analysis.prior): the torch import
alone, ``archscan scan --local off`` (trace, exact ranks, the chain and its prediction), the same
with an empty prior cache, and the default scan (adding the optimisation-attack view).  Prints
seconds and the ratio to the torch import, and the report's own stage timings for the default scan.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best_of(cmd: list, repeats: int, env: dict, cold_prior: bool = False) -> float:
    times = []
    for _ in range(repeats):
        if cold_prior:   # a cache directory of its own, empty: the prior photos decoded and resized
            env = {**env, "ARCHSCAN_CACHE_DIR": tempfile.mkdtemp(prefix="archscan-cold-")}
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=False, capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="examples/paper_zoo.py:cnn6_d")
    p.add_argument("--input-shape", default="3,32,32")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "ARCHSCAN_NO_PROGRESS": "1",
           "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))}
    scan = [sys.executable, "-m", "archscan", "scan", args.model, "--input-shape", args.input_shape, "--no-config"]
    subprocess.run(scan + ["--local", "off", "--quiet"], cwd=ROOT, env=env, capture_output=True)   # warm numba's cache
    base = best_of([sys.executable, "-c", "import torch"], args.repeats, env)
    rows = [("python -c 'import torch'", base)]
    rows.append(("archscan scan --local off", best_of(scan + ["--local", "off", "--quiet"], args.repeats, env)))
    rows.append(("  the same, prior not cached", best_of(scan + ["--local", "off", "--quiet"], args.repeats, env, True)))
    rows.append(("archscan scan (default)", best_of(scan + ["--quiet"], args.repeats, env)))
    print(f"model {args.model} at {args.input_shape}; best of {args.repeats} fresh processes")
    for name, seconds in rows:
        print(f"{name:<28} {seconds:>7.2f} s  {seconds / base:>5.1f}x")
    out = subprocess.run(scan + ["--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode in (0, 1):
        print("stages of the default scan (report timing):", json.loads(out.stdout).get("timing"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
