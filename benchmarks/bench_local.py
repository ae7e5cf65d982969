"""The optimisation view: matrix-free Lanczos vs the dense reference (A from n products, eigh) on a
small CNN in the same process, and the view's wall time and memory on ResNet-18s.

    python benchmarks/bench_local.py                 # cnn_relu dense vs matrix-free, ResNet-18 CIFAR
    python benchmarks/bench_local.py --imagenet      # and ResNet-18 at 224x224 (a few minutes)
    python benchmarks/bench_local.py --device cuda   # on a GPU
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from naive import dense_gram, dense_reference  # noqa: E402

from archscan import config  # noqa: E402
from archscan.analysis.prior import prior_images  # noqa: E402
from archscan.analysis.spectrum import GramOperator, lanczos, weak_fractions  # noqa: E402
from archscan.config import ScanOptions  # noqa: E402
from archscan.pipeline import scan  # noqa: E402


def dense_vs_lanczos(device: str) -> None:
    """One image of cnn_relu: the exact tikhonov fraction from the dense A against Lanczos."""
    from examples.paper_zoo import cnn_relu
    torch.manual_seed(0)
    model = cnn_relu()
    X = prior_images((3, 32, 32), config.PRIOR_IMAGES, 0)
    v = (X - X.mean(0))[:1]
    op = GramOperator(model, X[0].reshape(3, 32, 32), 0, dtype=torch.float64, device=device)
    t0 = time.perf_counter()
    A = dense_gram(op, chunk=64)
    eig = np.linalg.eigh(A)
    dense_s = time.perf_counter() - t0
    t = config.LOCAL_TAU ** 2 * op.points[0].grad_sq_norm / float((v ** 2).sum())   # the "gradient" reference
    ref = dense_reference(A, v, 0.0, threshold=t, eig=eig)
    for steps in (10, 20, 40):
        t0 = time.perf_counter()
        run = lanczos(op, v, steps, None, batch=1)
        est = weak_fractions(run, config.LOCAL_TAU, reference=config.LOCAL_REFERENCE).tikhonov
        mf_s = time.perf_counter() - t0
        print(f"cnn_relu n=3072  steps {steps:>3}: tikhonov {float(est.estimate[0]):.4g} in "
              f"[{float(est.lo[0]):.4g}, {float(est.hi[0]):.4g}], dense {ref.tikhonov[0]:.4g}; "
              f"{mf_s:.2f} s vs dense {dense_s:.1f} s ({dense_s / mf_s:.0f}x)")


def view(spec: str, shape: tuple, device: str) -> None:
    t0 = time.perf_counter()
    report = scan(str(ROOT / spec), ScanOptions(input_shape=shape, local="on", device=device)).to_dict()
    o = report["scores"]["optimisation"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{spec.split(':')[-1]:<20} view {report['timing']['optimisation_s']:.1f} s (scan {time.perf_counter() - t0:.1f} s), "
          f"{o['samples']} samples x {o['steps'][1]} steps, {o['products']} products, predicted "
          f"{o['predicted_psnr']:.1f} dB {o['psnr_interval']}, verdict {report['scores']['verdict']}, "
          f"peak RSS {rss:.0f} MB, device {device}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--imagenet", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    dense_vs_lanczos(args.device)
    view("examples/resnet.py:resnet18_cifar", (3, 32, 32), args.device)
    if args.imagenet:
        view("examples/resnet.py:resnet18_imagenet", (3, 224, 224), args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
