"""Estimate memory before a large allocation: how many linearisation points of the optimisation
view fit, or a one-line refusal that names what it would need."""
from __future__ import annotations

import torch

from archscan.errors import ArchscanError

# Bytes kept per traced activation entry by one cached gradient graph (the forward activations
# and the saved tensors of the backward built with create_graph), in float32: measured as 6-8x
# the plain activation bytes on CNNs here; 10x leaves room.
GRAPH_FACTOR = 10
SHARE = 0.5            # never plan on more than this share of the free memory


class OverBudget(ArchscanError):
    """The step would not fit in memory; the message says how much it needs and has (exit 2 when
    it stops a scan; the optimisation view catches it and degrades)."""


def available_bytes(device: torch.device) -> int:
    """Free memory of the device (CUDA) or of the machine (MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2 ** 30   # unknown platform: assume a modest machine


def point_bytes(module, activations: int) -> int:
    """One cached gradient graph at one image, float32."""
    params = sum(p.numel() for p in module.parameters())
    return 4 * (GRAPH_FACTOR * max(activations, 1) + 3 * params)


def basis_bytes(k: int, steps: int, n: int) -> int:
    """The float64 Lanczos bases of k processes."""
    return 8 * k * (steps + 1) * n


def points_that_fit(module, n: int, activations: int, k: int, steps: int, device, views: int = 1) -> int:
    """The most samples (<= k) whose graphs (one per sample and view) and bases fit in SHARE of free memory."""
    free = SHARE * available_bytes(torch.device(device))
    per = point_bytes(module, activations)
    for j in range(k, 0, -1):
        if views * (j * per + basis_bytes(j, steps, n)) <= free:
            return j
    need = views * (per + basis_bytes(1, steps, n))
    raise OverBudget(f"the optimisation view needs ~{need / 2**30:.1f} GiB for one image; "
                     f"{free / 2**30:.1f} GiB may be used here ({SHARE:.0%} of the free memory)")


# Peak bytes a scan holds per activation value of one forward pass (the traced forward, shape
# propagation, every layer's system and the chain's projectors): measured 11 B on ResNet-18 at
# 896x896 (benchmarks/bench_memory.py: 7.7 B at 448, 10.0 B at 896); 16 leaves room.
SCAN_BYTES_PER_VALUE = 16


def check_scan_fits(values: int | None, params: int, what: str) -> None:
    """Refuse, before anything is allocated, a scan whose activations would not fit."""
    if values is None:
        return
    need = SCAN_BYTES_PER_VALUE * values + 8 * params
    free = SHARE * available_bytes(torch.device("cpu"))
    if need > free:
        raise OverBudget(f"{what}: a scan at this size needs ~{need / 2**30:.1f} GiB ({values:.3g} activation values); "
                         f"{free / 2**30:.1f} GiB may be used here ({SHARE:.0%} of the free memory): "
                         f"give a smaller --input-shape")
