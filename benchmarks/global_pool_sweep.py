"""What a separate attack resolution behind a global average pool would do -- the evidence that it
is not adopted (docs/scores.md), one command:

    python benchmarks/global_pool_sweep.py -o benchmarks/results/calibration/global_pool.txt

For every calibration model of ``examples/manifest.toml`` whose head reads a global average over
positions (``archscan.analysis.local.global_pool_of``): the default scan's optimisation view at a
grid of tau (one set of Lanczos runs, evaluated at every tau), against the tuned attacks' best PSNR
(``benchmarks/results/calibration/attacks``).  It reports the grid's tau with the smallest
mean absolute error on the held-in models among those that call no held-in model RESISTANT that
the base tau calls PARTIAL; the held-out models at it.  (That tau, 0.2, calls the CIFAR and the
ImageNet ResNet-18 RESISTANT, where archscan's own attacks reach 16-17 dB on the former: a safe
verdict fitted to attacks that are weak on these networks, so the scan keeps one tau.)
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

from archscan import config  # noqa: E402
from archscan.analysis.local import global_pool_of, spectrum_at_prior  # noqa: E402
from archscan.analysis.scores import psnr_of  # noqa: E402
from archscan.analysis.verdict import verdict_of  # noqa: E402
from archscan.config import ScanOptions  # noqa: E402
from archscan.model.footprint import activation_values  # noqa: E402
from archscan.model.graph import build_graph  # noqa: E402
from archscan.model.load import load_model  # noqa: E402
from archscan.model.trace import trace_model  # noqa: E402

GRID = (0.013, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)


def predictions(entry: dict, seed: int) -> dict | None:
    """{tau: (predicted PSNR, leakage score)} of the default scan's view, or None without a global pool."""
    shape = tuple(entry["input_shape"])
    loaded = load_model(str(ROOT / entry["spec"]), {}, entry.get("num_classes"), seed)
    g = build_graph(trace_model(loaded, shape).nodes)
    if global_pool_of(g) is None:
        return None
    from archscan.analysis.systems import build_system, forward_macs
    from archscan.model.graph import parametric_order
    systems = {n.name: build_system(g, n, 2, seed, 0.5) for n in parametric_order(g)}
    opts = ScanOptions(input_shape=shape, num_classes=entry.get("num_classes"), seed=seed)
    spec, plan = spectrum_at_prior(loaded.module, opts, shape, activation_values(loaded.module, shape) or 0,
                                   forward_macs(systems))
    out = {}
    for tau in GRID:
        frac = spec.worst(tau, config.LOCAL_REFERENCE, config.LOCAL_FUNCTIONAL).overall.estimate
        out[tau] = (psnr_of(float(frac * plan["prior_energy"] / spec.samples.n)), 1.0 - float(frac))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attacks", default=str(ROOT / "benchmarks" / "results" / "calibration" / "attacks"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    entries = [m for m in tomllib.loads((ROOT / "examples" / "manifest.toml").read_text())["model"]
               if m.get("calibration")]
    rows = []
    for e in entries:
        name = e["spec"].split(":")[-1]
        report = Path(args.attacks) / name / "report.json"
        if not report.is_file():
            continue
        pred = predictions(e, args.seed)
        if pred is None:
            continue
        achieved = json.loads(report.read_text())["best_psnr"]
        rows.append({"model": name, "set": e["calibration"], "achieved": achieved, "pred": pred})
        print(name, file=sys.stderr, flush=True)
    held_in = [r for r in rows if r["set"] == "held-in"]

    def err(rs, tau):
        return statistics.mean(abs(r["pred"][tau][0] - r["achieved"]) for r in rs)

    base = GRID[0]
    unsafe = [r for r in held_in if verdict_of(r["pred"][base][1]) != "RESISTANT"]
    allowed = [t for t in GRID if all(verdict_of(r["pred"][t][1]) != "RESISTANT" for r in unsafe)]
    choice = min(allowed, key=lambda t: err(held_in, t))
    lines = [f"{'model':<22} {'set':<9} {'achieved':>8}  " + " ".join(f"{t:>6g}" for t in GRID)]
    for r in rows:
        lines.append(f"{r['model']:<22} {r['set']:<9} {r['achieved']:>8.1f}  "
                     + " ".join(f"{r['pred'][t][0]:>6.1f}" for t in GRID))
    lines.append("held-in mean |error| by tau: " + ", ".join(f"{t:g}: {err(held_in, t):.2f}" for t in GRID))
    lines.append(f"taus that call none of {', '.join(r['model'] for r in unsafe)} RESISTANT: "
                 f"{', '.join(f'{t:g}' for t in allowed)}")
    held_out = [r for r in rows if r["set"] == "held-out"]
    lines.append(f"best allowed: tau = {choice:g} (held-in mean |error| {err(held_in, choice):.2f} dB; held-out "
                 f"{err(held_out, choice):.2f} dB, within 4 dB: "
                 f"{sum(abs(r['pred'][choice][0] - r['achieved']) <= 4 for r in held_out)}/{len(held_out)})")
    text = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
