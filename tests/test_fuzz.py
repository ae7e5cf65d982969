"""Fuzzing: hypothesis builds small models (convs, Linear, activations, norms, pooling, reshapes,
residuals; random geometry) and scans them.  Nothing may crash (an ArchscanError is a user-facing
exit 2; anything else would be exit 3), ranks stay within [0, unknowns], the report is well formed
and the same run gives the same report.  ARCHSCAN_FUZZ_EXAMPLES sets the count (CI: 300)."""
import json
import os
import sys
import types

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from archscan.api import scan
from archscan.config import ScanOptions
from archscan.errors import ArchscanError

EXAMPLES = int(os.environ.get("ARCHSCAN_FUZZ_EXAMPLES", "300"))
ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus)


class Residual(nn.Module):
    def __init__(self, channels: int, act):
        super().__init__()
        self.conv, self.act = nn.Conv2d(channels, channels, 3, padding=1), act()

    def forward(self, x):
        return x + self.act(self.conv(x))


@st.composite
def blocks(draw, channels: int, side: int):
    """One block of layers and the channels and side after it."""
    kind = draw(st.sampled_from(["conv", "act", "norm", "pool", "residual", "dropout"]))
    if kind == "conv":
        k = draw(st.integers(1, min(3, side)))
        s, p = draw(st.integers(1, 2)), draw(st.integers(0, 1))
        out = draw(st.integers(1, 6))
        new_side = (side + 2 * p - k) // s + 1
        if new_side < 1:
            return [], channels, side
        return [nn.Conv2d(channels, out, k, stride=s, padding=p, bias=draw(st.booleans()))], out, new_side
    if kind == "act":
        return [draw(st.sampled_from(ACTIVATIONS))()], channels, side
    if kind == "norm":
        return [nn.BatchNorm2d(channels)], channels, side
    if kind == "pool" and side >= 2:
        return [draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)]))], channels, side // 2
    if kind == "residual":
        return [Residual(channels, draw(st.sampled_from(ACTIVATIONS)))], channels, side
    return [nn.Dropout(0.1)], channels, side


@st.composite
def models(draw):
    channels, side = draw(st.integers(1, 3)), draw(st.integers(2, 8))
    shape = (channels, side, side)
    layers = []
    for _ in range(draw(st.integers(0, 5))):
        more, channels, side = draw(blocks(channels, side))
        layers += more
    head = [nn.Flatten(), nn.Linear(channels * side * side, draw(st.integers(1, 5)), bias=draw(st.booleans()))]
    torch.manual_seed(draw(st.integers(0, 1000)))
    return nn.Sequential(*layers, *head).eval(), shape


def _spec(model) -> str:
    mod = sys.modules.setdefault("archscan_fuzz_models", types.ModuleType("archscan_fuzz_models"))
    mod.net = model
    return "archscan_fuzz_models:net"


def _check(report: dict) -> None:
    for layer in report["layers"]:
        assert 0 <= layer["rank"] <= layer["unknowns"] and layer["deficiency"] >= 0
        assert 0 <= layer["attack"]["rank"] <= layer["unknowns"]
    s = report["scores"]
    assert 0.0 <= s["leakage_score"] <= 1.0 and s["verdict"] in ("LEAKS", "PARTIAL", "UNVERIFIED", "RESISTANT")
    assert s["copa_index"] <= 0
    json.dumps(report)


def _comparable(report: dict) -> str:
    report = dict(report, timing={}, created="")
    report["layers"] = [dict(layer, seconds=0) for layer in report["layers"]]
    return json.dumps(report, sort_keys=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(models())
def test_generated_models_scan_without_crashing(case):
    model, shape = case
    options = ScanOptions(input_shape=shape, local="off")
    try:
        first = scan(_spec(model), options).to_dict()
    except ArchscanError:
        return  # a one-line user-facing error (exit 2): allowed
    _check(first)
    assert _comparable(first) == _comparable(scan(_spec(model), options).to_dict())


@settings(max_examples=max(3, EXAMPLES // 60), deadline=None, suppress_health_check=list(HealthCheck))
@given(models())
def test_generated_models_with_the_optimisation_view(case):
    model, shape = case
    try:
        report = scan(_spec(model), ScanOptions(input_shape=shape, local="on")).to_dict()
    except ArchscanError:
        return
    _check(report)
    assert report["scores"]["optimisation"]["status"] in ("ran", "skipped", "failed")
