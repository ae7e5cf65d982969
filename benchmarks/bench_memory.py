"""Peak memory of a scan per activation value, the constant behind the refusal of sizes that do not
fit (``archscan/analysis/memory.py: SCAN_BYTES_PER_VALUE``).

    python benchmarks/bench_memory.py                       # ResNet-18 at 224, 448, 896 (about a minute)
    python benchmarks/bench_memory.py --sizes 224 448 --model examples/paper_zoo.py:cnn_relu

Each size runs a ``--local off`` scan in a fresh process (peak RSS is per process); the bytes per
value are the growth of the peak over the smallest size, divided by the growth of the activation
count (counted on fake tensors), so the interpreter's and torch's fixed footprint cancels.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys
from archscan.config import ScanOptions
from archscan.model.footprint import activation_values
from archscan.model.load import load_model
from archscan.pipeline import scan
spec, size = sys.argv[1], int(sys.argv[2])
shape = (3, size, size)
values = activation_values(load_model(spec, {}, None, 0).module, shape)
scan(spec, ScanOptions(input_shape=shape, local="off"))
print(json.dumps({"values": values, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def measure(spec: str, size: int) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, spec, str(size)], capture_output=True, text=True,
                          env=env, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    from archscan.analysis.memory import SCAN_BYTES_PER_VALUE
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="examples/resnet.py:resnet18_imagenet")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 448, 896])
    args = p.parse_args()
    rows = [(s, measure(args.model, s)) for s in args.sizes]
    base_size, base = rows[0]
    print(f"{args.model}: peak RSS of a --local off scan per activation value (estimate uses {SCAN_BYTES_PER_VALUE} B)")
    print(f"{'size':>6} {'values':>12} {'peak MiB':>10} {'B/value over ' + str(base_size):>18}")
    worst = 0.0
    for size, r in rows:
        grow = (r["peak"] - base["peak"]) / max(r["values"] - base["values"], 1) if size != base_size else float("nan")
        worst = max(worst, grow) if size != base_size else worst
        print(f"{size:>6} {r['values']:>12} {r['peak'] / 2**20:>10.0f} {grow:>18.1f}")
    print(f"largest growth {worst:.1f} B per value; the estimate's {SCAN_BYTES_PER_VALUE} B "
          f"{'covers' if worst <= SCAN_BYTES_PER_VALUE else 'does NOT cover'} it")
    return 0 if worst <= SCAN_BYTES_PER_VALUE else 1


if __name__ == "__main__":
    sys.exit(main())
