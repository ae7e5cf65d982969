#!/usr/bin/env python
"""Benchmark of the exact generic-rank kernels on real layer shapes.

Layers: the CIFAR-size conv layers of the papers (Chen & Campbell / R-GAP), the ImageNet ResNet-18
stem and a 64x56x56 3x3 layer, then every conv and linear layer of ResNet-18 at 224x224 (stem,
layer1-4 BasicBlocks with their 1x1 stride-2 downsamples, fc 512->1000), built by hand.

For each layer: unknowns, rows of W and K, the exact generic ranks of [W;K], W and K (and whether
each is exact or an interval), wall time of ``conv_ranks``, peak traced numpy memory (tracemalloc)
and the process's peak RSS (ru_maxrss).  Where the stacked dense float matrix is small enough
(<= --svd-max-cols columns and --svd-max-entries entries) it also times numpy.linalg.matrix_rank
(an SVD) on a random float64 instance built with forward_matrix / gradient_matrix, gives the
SVD/exact time ratio and says whether the SVD rank agrees with the exact rank.

numba compile time is measured separately: first call vs second call in a fresh cache directory,
plus the time to load the compiled code from that cache in a new process.

Usage:  python benchmarks/bench_kernels.py [--no-svd] [--only papers|resnet18]
"""
from __future__ import annotations

import os
import sys
import tempfile

# One BLAS thread (fair timings on shared cores) and a fresh numba cache, before any import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_FRESH_CACHE = tempfile.mkdtemp(prefix="archscan-bench-numba-")
os.environ["NUMBA_CACHE_DIR"] = _FRESH_CACHE

import argparse  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402


@dataclass(frozen=True)
class Layer:
    name: str
    geom: object            # ConvGeometry
    linear: tuple | None = None  # (n_in, n_out) for nn.Linear


def paper_layers(G):
    return [
        Layer("cifar 6x30x30 -> 9 k3", G(6, 30, 30, 9, 3, 3)),
        Layer("cifar 12x17x17 -> 20 k3 s2 p1", G(12, 17, 17, 20, 3, 3, 2, 2, 1, 1)),
        Layer("cifar 3x32x32 -> 12 k3 s2 p1", G(3, 32, 32, 12, 3, 3, 2, 2, 1, 1)),
        Layer("cifar 6x30x30 -> 3 k4 s2", G(6, 30, 30, 3, 4, 4, 2, 2)),
        Layer("imagenet stem 3x224 -> 64 k7 s2 p3", G(3, 224, 224, 64, 7, 7, 2, 2, 3, 3)),
        Layer("64x56x56 -> 64 k3 p1", G(64, 56, 56, 64, 3, 3, 1, 1, 1, 1)),
    ]


def resnet18_layers(G, linear_geometry):
    """Every parametric layer of torchvision's resnet18 at 224x224, in forward order."""
    out = [Layer("conv1 3x224 -> 64 k7 s2 p3", G(3, 224, 224, 64, 7, 7, 2, 2, 3, 3))]
    c, n = 64, 56                           # after the 3x3 s2 max-pool
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            m = n // stride
            tag = f"layer{stage}.{block}"
            out.append(Layer(f"{tag}.conv1 {c}x{n} -> {width} k3 s{stride}",
                             G(c, n, n, width, 3, 3, stride, stride, 1, 1)))
            out.append(Layer(f"{tag}.conv2 {width}x{m} -> {width} k3",
                             G(width, m, m, width, 3, 3, 1, 1, 1, 1)))
            if stride != 1 or c != width:
                out.append(Layer(f"{tag}.downsample {c}x{n} -> {width} k1 s2",
                                 G(c, n, n, width, 1, 1, 2, 2, 0, 0)))
            c, n = width, m
    out.append(Layer("fc 512 -> 1000", linear_geometry(512, 1000), linear=(512, 1000)))
    return out


def measure_compile(kern) -> tuple[float, float, float]:
    """(first call, second call, fresh process loading the cache) on a small layer."""
    def workload():
        g = kern.ConvGeometry(3, 9, 9, 4, 3, 3, 2, 2, 1, 1)
        kern.conv_ranks(g)
        kern.forward_matrix(g, np.ones((4, 3, 3, 3)))
        kern.gradient_matrix(g, np.ones((4, g.Ho, g.Wo)))
        kern.rank_mod_p(np.eye(300))
        kern.relu_stats(g, kern.conv_ranks(g), 0.5, 2, 0)

    t0 = time.perf_counter()
    workload()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    workload()
    second = time.perf_counter() - t0
    code = ("import time, numpy as np; t=time.perf_counter(); import archscan_kernels as k; "
            "g=k.ConvGeometry(3,9,9,4,3,3,2,2,1,1); k.conv_ranks(g); k.rank_mod_p(np.eye(300)); "
            "k.relu_stats(g, k.conv_ranks(g), 0.5, 2, 0); "
            "k.forward_matrix(g, np.ones((4,3,3,3))); k.gradient_matrix(g, np.ones((4,g.Ho,g.Wo))); "
            "print(time.perf_counter()-t)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ), check=True)
    return first, second, float(res.stdout.strip().splitlines()[-1])


def svd_check(kern, layer, exact_rank, max_cols, max_entries, seed=0):
    g = layer.geom
    rows = g.F * g.Ho * g.Wo + g.F * g.Cg * g.kh * g.kw
    if g.unknowns > max_cols or rows * g.unknowns > max_entries:
        return None
    rng = np.random.default_rng(seed)
    A = np.vstack([kern.forward_matrix(g, rng.standard_normal((g.F, g.Cg, g.kh, g.kw))),
                   kern.gradient_matrix(g, rng.standard_normal((g.F, g.Ho, g.Wo)))])
    t0 = time.perf_counter()
    r = int(np.linalg.matrix_rank(A))
    return time.perf_counter() - t0, r, r == exact_rank


def cutoff_section(kern, seeds=(0, 1)):
    """theory.md's cut-off example: the square LeNet-style operator W alone (no K rows)."""
    g = kern.ConvGeometry(3, 32, 32, 12, 3, 3, 2, 2, 1, 1)
    exact = kern.conv_ranks(g).forward
    print("Float cut-off on the square operator W alone (3->12 k3 s2 p1 on 32x32, 3072x3072):")
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for name, w in (("normal", rng.standard_normal((12, 3, 3, 3))),
                        ("kaiming-uniform", rng.uniform(-1, 1, (12, 3, 3, 3)) / np.sqrt(27))):
            W = kern.forward_matrix(g, w)
            t0 = time.perf_counter()
            s = np.linalg.svd(W, compute_uv=False)
            t = time.perf_counter() - t0
            r = int(np.linalg.matrix_rank(W))
            print(f"  seed {seed} {name:<16} SVD rank {r} (sigma_min/sigma_max {s[-1] / s[0]:.1e}, "
                  f"{t:.1f} s)  vs exact {fmt_rank(exact)}")
    print()


def fmt_rank(b) -> str:
    return f"{b.value}" if b.exact else f"[{b.lo},{b.hi}]"


def _ranks(kern, layer):
    return kern.linear_ranks(*layer.linear) if layer.linear else kern.conv_ranks(layer.geom)


def _cold_time(kern, layer, repeats: int) -> float:
    """Best of ``repeats`` calls, each with the engine's caches cleared (a cold layer)."""
    best = float("inf")
    for _ in range(repeats):
        kern.conv_rank._tap_masks_cached.cache_clear()
        t0 = time.perf_counter()
        _ranks(kern, layer)
        best = min(best, time.perf_counter() - t0)
    return best


def run_layer(kern, layer, args):
    """Ranks, best-of-N cold wall time (untraced), then traced peak memory in a separate call."""
    kern.conv_rank._tap_masks_cached.cache_clear()
    tracemalloc.start()
    tracemalloc.reset_peak()
    r = _ranks(kern, layer)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    elapsed = _cold_time(kern, layer, args.repeats)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    svd = None if args.no_svd else svd_check(kern, layer, r.stack.value, args.svd_max_cols,
                                             args.svd_max_entries)
    return r, elapsed, peak, rss, svd


HEADER = (f"{'layer':<38} {'unknowns':>9} {'rows W':>9} {'rows K':>9} {'rank [W;K]':>11} "
          f"{'rank W':>14} {'rank K':>8} {'exact?':>6} {'time s':>8} {'peak MB':>8} "
          f"{'RSS MB':>7} {'SVD s':>7} {'SVD/ex':>8} {'SVD ok':>6}")


def row(layer, r, elapsed, peak, rss, svd) -> str:
    exact = "yes" if (r.stack.exact and r.forward.exact and r.gradient.exact) else (
        "stack" if r.stack.exact else "no")
    svd_cols = ("", "", "") if svd is None else (
        f"{svd[0]:.2f}", f"{svd[0] / max(elapsed, 1e-6):.0f}x", "yes" if svd[2] else f"no:{svd[1]}")
    return (f"{layer.name:<38} {r.unknowns:>9} {r.rows_forward:>9} {r.rows_gradient:>9} "
            f"{fmt_rank(r.stack):>11} {fmt_rank(r.forward):>14} {fmt_rank(r.gradient):>8} "
            f"{exact:>6} {elapsed:>8.3f} {peak:>8.1f} {rss:>7.0f} {svd_cols[0]:>7} "
            f"{svd_cols[1]:>8} {svd_cols[2]:>6}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-svd", action="store_true", help="skip the dense float SVD baseline")
    ap.add_argument("--svd-max-cols", type=int, default=8000)
    ap.add_argument("--svd-max-entries", type=int, default=60_000_000)
    ap.add_argument("--only", choices=("papers", "resnet18"))
    ap.add_argument("--repeats", type=int, default=3, help="cold runs per layer; the best is shown")
    args = ap.parse_args(argv)

    t_import = time.perf_counter()
    import archscan_kernels as kern
    t_import = time.perf_counter() - t_import
    import numba
    print(f"numpy {np.__version__}, numba {numba.__version__}, OPENBLAS_NUM_THREADS="
          f"{os.environ['OPENBLAS_NUM_THREADS']}, fresh NUMBA_CACHE_DIR={_FRESH_CACHE}")
    first, second, cached = measure_compile(kern)
    print(f"import archscan_kernels: {t_import:.2f} s")
    print(f"numba: first call {first:.2f} s (compile + run), second call {second:.3f} s "
          f"-> compile ~{first - second:.2f} s; new process loading the cache: {cached:.2f} s\n")

    groups = []
    if args.only in (None, "papers"):
        groups.append(("Paper layers", paper_layers(kern.ConvGeometry)))
    if args.only in (None, "resnet18"):
        groups.append(("ResNet-18 @ 224 (all conv + linear layers)",
                       resnet18_layers(kern.ConvGeometry, kern.linear_geometry)))
    for title, layers in groups:
        print(title)
        print(HEADER)
        print("-" * len(HEADER))
        total_t, total_u, all_exact = 0.0, 0, True
        for layer in layers:
            r, elapsed, peak, rss, svd = run_layer(kern, layer, args)
            total_t += elapsed
            total_u += r.unknowns
            all_exact &= r.stack.exact
            print(row(layer, r, elapsed, peak, rss, svd), flush=True)
        print(f"{'total':<38} {total_u:>9} {'':>9} {'':>9} {'':>11} {'':>14} {'':>8} "
              f"{'yes' if all_exact else 'no':>6} {total_t:>8.3f}")
        print()
    if not args.no_svd and args.only in (None, "papers"):
        cutoff_section(kern)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole run: {rss:.0f} MB (includes the dense SVD baselines)")
    print("exact? yes = stack, W and K all exact; 'stack' = stack exact, W an interval [lo,hi].")
    print("SVD/ex = matrix_rank time / exact-rank time; SVD ok = float rank equals exact rank.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
