#!/usr/bin/env python
"""Attack throughput: images per second for `ig` and `rgap`, batched (all images as independent
problems of one run) versus one image at a time, measured in the same process.

Usage:  python benchmarks/bench_attacks.py [--device cuda] [--images 8] [--ig-iterations 200]
                                          [--repeat 1]
Prints the device (with the GPU model when there is one) and, per attack, both throughputs and
their ratio.  One untimed warm-up run (one image) precedes the timed runs of each attack;
``--repeat N`` keeps the fastest of N alternating runs per path.  Never a timed test: run it by
hand and record the figures (README).
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from archscan.images import load_images
from archscan.validate.attacks import get_attack, make_target

ROOT = Path(__file__).resolve().parents[1]


def _model(name: str):
    spec = importlib.util.spec_from_file_location("paper_zoo", ROOT / "examples" / "paper_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    return getattr(mod, name)().eval()


def _time(attack, target, device) -> float:
    start = time.perf_counter()
    attack.reconstruct(target, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(name: str, settings: dict, model, images, device, repeat: int = 1) -> tuple[float, float]:
    """Batched and one-at-a-time throughput (images per second) of one attack.

    One untimed run on the first image comes first, so one-off costs (imports, the first
    ``torch.fx`` trace, kernel and allocator warm-up) are charged to neither path.  With
    ``repeat > 1`` both paths run that many times, alternately, and the fastest run of each counts
    (on a shared machine the slower runs measure the neighbours).
    """
    labels = torch.arange(len(images)) % 10
    batched = make_target(model, images, labels, per_sample=True, device=device)
    attack = get_attack(name, **settings)
    _time(attack, make_target(model, images[:1], labels[:1], per_sample=True, device=device), device)
    singles = [make_target(model, images[i:i + 1], labels[i:i + 1], per_sample=True, device=device)
               for i in range(len(images))]
    t_batch = t_single = float("inf")
    for _ in range(repeat):
        t_batch = min(t_batch, _time(attack, batched, device))
        t_single = min(t_single, sum(_time(attack, s, device) for s in singles))
    return len(images) / t_batch, len(images) / t_single


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--ig-iterations", type=int, default=200)
    ap.add_argument("--model", default="lenet_rgap")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per path; the fastest counts")
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, 1 torch thread"
    model = _model(args.model)
    images, _ = load_images(None, args.images, (3, 32, 32))
    print(f"device: {what}; model {args.model} 3x32x32; {args.images} images; float64")
    print(f"{'attack':<6} {'batched img/s':>14} {'one-at-a-time img/s':>20} {'ratio':>6}")
    for name, settings in (("rgap", {}), ("ig", {"iterations": args.ig_iterations})):
        fast, slow = measure(name, settings, model, images, device, args.repeat)
        print(f"{name:<6} {fast:>14.2f} {slow:>20.2f} {fast / slow:>6.2f}")


if __name__ == "__main__":
    main()
