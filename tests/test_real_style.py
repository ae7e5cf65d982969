"""examples/real_style.py: the calibration networks build, are seeded, train, trace and scan.

Their verdicts are checked with the rest of the manifest in test_scan_zoo.py (kind = "real")."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import tomllib
import torch

from archscan.cli import main
from archscan.model.load import LoadedModel
from archscan.model.trace import trace_model

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "examples" / "real_style.py"
spec = importlib.util.spec_from_file_location("real_style_under_test", SOURCE)
real_style = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real_style)
BASE = ["resnet8", "vgg_small", "lenet_relu", "mobilenet_se", "mlp3"]
MANIFEST = tomllib.loads((ROOT / "examples" / "manifest.toml").read_text())["model"]


@pytest.fixture(scope="module")
def trained():
    return {name: getattr(real_style, f"{name}_trained")() for name in BASE}


@pytest.mark.parametrize("name", BASE)
def test_factory_builds_seeded_logits_and_traces(name, trained):
    factory = getattr(real_style, name)
    state = torch.random.get_rng_state()
    model, again, other = factory(), factory(), factory(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    params = dict(model.named_parameters())
    assert all(torch.equal(p, dict(again.named_parameters())[n]) for n, p in params.items())
    assert not all(torch.equal(p, dict(other.named_parameters())[n]) for n, p in params.items())
    assert not model.training and not trained[name].training
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (1, 10) and trained[name](x).shape == (1, 10)
        assert factory(num_classes=7)(x).shape == (1, 7)
    moved = [n for n, p in trained[name].named_parameters() if not torch.equal(p, params[n])]
    assert len(moved) == len(params)  # every parameter took SGD steps
    assert trace_model(LoadedModel(model, None, name, str(SOURCE)), (3, 32, 32)).nodes
    entry = next(m for m in MANIFEST if m["spec"] == f"examples/real_style.py:{name}")
    assert entry["kind"] == "real" and entry["params"] == sum(p.numel() for p in params.values())
    assert any(m["spec"] == f"examples/real_style.py:{name}_trained" for m in MANIFEST)


def test_trained_variant_is_the_factory_with_trained_steps(trained):
    a, b = real_style.lenet_relu(trained_steps=real_style.TRAINED_STEPS), trained["lenet_relu"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    bn = trained["resnet8"].bn1
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # BatchNorm statistics moved


def test_scan_cli_on_a_real_style_model(capsys):
    assert main(["scan", f"{SOURCE}:lenet_relu_trained", "--input-shape", "3,32,32", "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    s = rep["scores"]
    # ReLU + max pooling stop the closed-form chain; the optimisation view still runs and decides
    assert s["chain"]["verdict"] == "RESISTANT" and rep["image"]["status"] == "blocked"
    assert s["optimisation"]["status"] == "ran" and s["verdict"] == s["optimisation"]["verdict"]
