"""FedAvg local steps (--fedavg-steps E --fedavg-lr LR): the client's update, the unrolled update the
optimisation view and attacks differentiate, the operator against a dense Jacobian of the update,
and what the verdict and validate do with an update that is not one gradient."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archscan.analysis.spectrum.operator import GramOperator
from archscan.config import ScanOptions
from archscan.errors import InputError
from archscan.fedavg import LocalSteps, client_update, local_steps, unrolled
from archscan.validate.attacks.base import batched_gradient_fn, make_target, observe_gradients

from test_spectrum import tiny_conv_tanh, tiny_mlp

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def _reference_update(model, x, y, local: LocalSteps):
    """(w_0 - w_E)/(E lr) with plain autograd (create_graph), differentiable in x: the reference."""
    start = {n: p.detach() for n, p in model.named_parameters()}
    w = {n: v.clone().requires_grad_(True) for n, v in start.items()}
    for _ in range(local.steps):
        loss = F.cross_entropy(torch.func.functional_call(model, w, (x,)), y, reduction="sum")
        grads = torch.autograd.grad(loss, list(w.values()), create_graph=True)
        w = {n: v - local.lr * g for (n, v), g in zip(w.items(), grads)}
    return torch.cat([((start[n] - w[n]) / (local.steps * local.lr)).reshape(-1) for n in start])


def test_one_step_is_the_gradient_and_the_client_matches_the_unrolled_update():
    net = tiny_conv_tanh().double()
    x, y = torch.rand(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 4])
    plain = observe_gradients(net, x, y)
    assert all(torch.equal(plain[k], observe_gradients(net, x, y, fedavg=LocalSteps())[k]) for k in plain)
    local = LocalSteps(4, 0.3)
    client = client_update(net, x, y, local)
    names = [n for n, _ in net.named_parameters()]
    simulated = batched_gradient_fn(net, names, fedavg=local)(x[None], y[None])
    for k in client:
        assert torch.allclose(simulated[k][0], client[k], rtol=1e-10, atol=1e-12), k
    assert max(float((client[k] - plain[k]).abs().max()) for k in plain) > 1e-3   # the steps change the update
    assert unrolled(len, LocalSteps()) is len                                     # one step: the gradient map itself


def test_small_learning_rate_tends_to_the_gradient():
    net = tiny_mlp().double()
    x, y = torch.rand(1, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(1)), torch.tensor([3])
    g = observe_gradients(net, x, y)
    u = client_update(net, x, y, LocalSteps(5, 1e-7))
    assert all(torch.allclose(u[k], g[k], rtol=1e-4, atol=1e-9) for k in g)


@pytest.mark.parametrize("model", [tiny_mlp, tiny_conv_tanh])
def test_operator_of_the_update_matches_the_dense_jacobian(model):
    net = model().double()
    shape = (1, 8, 8) if model is tiny_mlp else (3, 8, 8)
    local = LocalSteps(3, 0.2)
    image = torch.rand(shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([2])
    J = torch.autograd.functional.jacobian(lambda x: _reference_update(net, x[None], y, local), image)
    J = J.reshape(-1, image.numel())
    op = GramOperator(net, image.numpy(), 2, dtype=F64, fedavg=local)
    V = torch.randn(3, image.numel(), dtype=F64, generator=torch.Generator().manual_seed(3))
    expected = (J.T @ (J @ V.T)).T
    assert torch.allclose(op(V), expected, rtol=1e-8, atol=1e-10 * float(expected.abs().max()))
    one_step = GramOperator(net, image.numpy(), 2, dtype=F64)
    assert not torch.allclose(one_step(V), expected, rtol=1e-3)                    # it is a different map


def test_bad_values_name_what_is_wrong():
    for steps, lr, words in ((0, None, "1..10000"), (2.5, None, "whole number"), (3, -1.0, "positive"),
                             (3, float("nan"), "positive")):
        with pytest.raises(InputError, match=words):
            local_steps(steps, lr)
    assert local_steps(None, None) == LocalSteps()


def _scan(spec, local="auto", **kw):
    from archscan.pipeline import scan
    opts = ScanOptions(input_shape=(3, 32, 32), num_classes=10, local=local, **kw)
    return scan(spec, opts).to_dict()


def test_local_steps_hand_the_verdict_to_the_optimisation_view():
    """mlp2's chain determines one gradient's image exactly; with 3 local steps the chain's count
    does not apply: the optimisation view runs and decides, the threat model records the steps,
    and AS001 is a warning.  Without the view the verdict is never better than UNVERIFIED."""
    rep = _scan(f"{ROOT}/examples/paper_zoo.py:mlp2", fedavg=LocalSteps(3, 0.05))
    s = rep["scores"]
    assert s["optimisation"]["status"] == "ran" and s["decided_by"] == "optimisation"
    assert "3 local SGD steps" in s["verdict_note"] and rep["threat_model"]["fedavg"] == {"local_steps": 3, "lr": 0.05}
    assert [f["severity"] for f in rep["findings"] if f["rule_id"] == "AS001"] == ["warning"]
    off = _scan(f"{ROOT}/examples/paper_zoo.py:lenet5", local="off", fedavg=LocalSteps(2, 0.05))["scores"]
    assert off["verdict"] == "UNVERIFIED" and "did not run" in off["verdict_note"]


def test_validate_skips_closed_form_attacks_and_matches_the_simulated_update():
    """The true images reproduce the observed update exactly (gradient match 0) only if the match
    simulates the client's steps; the closed-form attacks say why they do not run."""
    from archscan.validate.run import ValidateOptions, validate
    scan = ScanOptions(input_shape=(3, 32, 32), num_classes=10, local="off", fedavg=LocalSteps(3, 0.1))
    rep = validate(f"{ROOT}/examples/paper_zoo.py:mlp2",
                   ValidateOptions(scan=scan, attacks=("prior", "analytic", "ig"), n_images=1, fast=True))
    skipped = {a["attack"]: a["skipped"] for a in rep["attacks"]}
    assert "3 local SGD steps" in skipped["analytic"] and skipped["ig"] is None
    ig = [r for r in rep["results"] if r["attack"] == "ig"]
    prior = [r for r in rep["results"] if r["attack"] == "prior"]
    assert ig[0]["psnr"] > prior[0]["psnr"] + 3                # the attack learns from the update
    from archscan.validate.run import gradient_match
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)).double()
    x, y = torch.rand(2, 3, 2, 2, dtype=F64), torch.tensor([0, 3])
    target = make_target(net, x, y, per_sample=True, fedavg=LocalSteps(4, 0.5))
    assert max(gradient_match(target, x, y)) < 1e-12
    assert min(gradient_match(target, x.flip(0), y)) > 1e-3


def test_a_batch_client_takes_its_steps_on_the_whole_batch():
    from archscan.validate.run import ValidateOptions, make_client
    net = tiny_conv_tanh().double()
    x = torch.rand(3, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(4))
    opts = ValidateOptions(scan=ScanOptions(input_shape=(3, 8, 8), batch_size=3, fedavg=LocalSteps(2, 0.1)))
    target = make_client(net, x, opts, num_classes=10, device="cpu")
    expected = client_update(net, x, torch.arange(3), LocalSteps(2, 0.1))
    assert not target.per_sample and all(torch.allclose(target.gradients[k], expected[k]) for k in expected)


def _main(capsys, *argv):
    from archscan.cli.main import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_and_pyproject(tmp_path, capsys, monkeypatch):
    spec = f"{ROOT}/examples/paper_zoo.py:mlp2"
    code, _, err = _main(capsys, "scan", spec, "--input-shape", "3,32,32", "--fedavg-steps", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--fedavg-steps" in err
    (tmp_path / "pyproject.toml").write_text("[tool.archscan]\nfedavg-lr = -2\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(capsys, "scan", spec, "--input-shape", "3,32,32")
    assert code == 2 and "fedavg-lr" in err and "positive" in err
    (tmp_path / "pyproject.toml").write_text("[tool.archscan]\nfedavg-steps = 2\nfedavg-lr = 0.05\n")
    code, out, err = _main(capsys, "scan", spec, "--input-shape", "3,32,32", "--local", "off", "--format", "json")
    assert code in (0, 1), err
    assert json.loads(out)["threat_model"]["fedavg"] == {"local_steps": 2, "lr": 0.05}
    code, out, _ = _main(capsys, "scan", spec, "--input-shape", "3,32,32", "--local", "off", "--fedavg-steps", "1")
    assert code in (0, 1) and "FedAvg" not in out
