"""Coverage of real model zoos: every torchvision/timm family scanned with random weights; the table
(model, handled / ignored / unsupported ops, the unsupported op types, verdict, seconds).

    # in an environment with torchvision (torch 2.14.1 + torchvision 0.29.1 on this machine) and timm:
    python benchmarks/zoo_coverage.py                      # --local off (coverage and the chain), 224x224
    python benchmarks/zoo_coverage.py --local auto --models resnet18 mobilenet_v3_small
    python benchmarks/zoo_coverage.py --size 64 -o zoo.json

Models are built here (no weights are downloaded: ``weights=None``), seeded from ``--seed``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

TORCHVISION = ["resnet18", "resnet50", "vgg11", "alexnet", "squeezenet1_0", "densenet121", "googlenet",
               "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0", "regnet_y_400mf",
               "convnext_tiny", "vit_b_16", "swin_t"]
TIMM = ["resnet18", "efficientnet_b0", "deit_tiny_patch16_224", "convnext_atto", "mobilevit_xxs", "levit_128s"]


def build(name: str):
    zoo, _, arch = name.rpartition(":")
    if zoo == "timm":
        import timm
        return timm.create_model(arch, pretrained=False, num_classes=10)
    import torchvision.models as tvm
    kw = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
    return getattr(tvm, arch)(weights=None, num_classes=10, **kw)


def row(name: str, size: int, local: str, seed: int) -> dict:
    import torch
    from archscan.config import ScanOptions
    from archscan.pipeline import scan
    torch.manual_seed(seed)
    holder = type(sys)("archscan_zoo_models")
    holder.model = build(name)
    holder.__archscan_live__ = True
    sys.modules[holder.__name__] = holder
    start = time.perf_counter()
    try:
        report = scan(f"{holder.__name__}:model", ScanOptions(input_shape=(3, size, size), local=local, seed=seed)).to_dict()
    except Exception as e:  # noqa: BLE001 - a benchmark row, not a gate
        return {"model": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}",
                "seconds": round(time.perf_counter() - start, 1)}
    unsupported = Counter(n["op"] for n in report["nodes"] if n["outcome"] == "unsupported")
    cov = report["coverage"]
    return {"model": name, "handled": cov["handled"], "ignored": cov["ignored"], "unsupported": cov["unsupported"],
            "unsupported_ops": dict(unsupported.most_common()), "verdict": report["scores"]["verdict"],
            "leakage_score": report["scores"]["leakage_score"], "predicted_psnr": report["scores"]["predicted_psnr"],
            "optimisation": report["scores"]["optimisation"]["status"],
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", help="torchvision names, or timm:NAME (default: both lists)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--local", default="off", choices=("off", "auto", "on"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", help="also write the rows as JSON")
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    names = args.models or TORCHVISION + [f"timm:{m}" for m in TIMM]
    rows = []
    print(f"{'model':<30} {'handled':>7} {'ignored':>7} {'unsup.':>6}  {'verdict':<10} {'s':>6}  unsupported ops")
    for name in names:
        r = row(name, args.size, args.local, args.seed)
        rows.append(r)
        if "error" in r:
            print(f"{name:<30} error: {r['error']}", flush=True)
            continue
        ops = ", ".join(f"{k}×{v}" for k, v in r["unsupported_ops"].items())
        print(f"{name:<30} {r['handled']:>7} {r['ignored']:>7} {r['unsupported']:>6}  {r['verdict']:<10} "
              f"{r['seconds']:>6.1f}  {ops}", flush=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump({"size": args.size, "local": args.local, "seed": args.seed, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
