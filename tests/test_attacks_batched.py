"""R-GAP's batched recursion: K independent problems at once give each problem's own result
(float64, CPU, tiny models)."""
from __future__ import annotations

import math

import pytest
import torch
from test_attacks import _image, determined_cnn
from test_attacks_dag import _Cat
from torch import nn

from archscan.validate.attacks import get_attack, make_target
from archscan.validate.attacks.layer_system import LayerSystem
from archscan.validate.attacks.solvers import lsqr, operator_columns, solve_system
from archscan.validate.attacks.steps import Step
from archscan.validate.metrics import psnr

torch.set_num_threads(1)
F64 = torch.float64


def grouped_bias_free():
    """Grouped conv (3 groups), a plain strided conv, and a Linear head without bias."""
    torch.manual_seed(8)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, groups=3), nn.Tanh(), nn.Conv2d(6, 8, 3, 2, 1),
                         nn.Sigmoid(), nn.Flatten(), nn.Linear(8 * 16, 10, bias=False))


def relu_cnn():
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))


def joint_dag():
    torch.manual_seed(4)
    return _Cat(nn.Conv2d(3, 4, 4, 2, 1), nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(8, 16, 3, padding=1), 16 * 16)


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("build,settings",
                         [(grouped_bias_free, {}), (determined_cnn, {"solver": "lsqr"}), (relu_cnn, {}),
                          (joint_dag, {})], ids=["grouped-bias-free", "lsqr", "relu", "dag"])
def test_batched_run_equals_per_image_runs(build, settings):
    """Three images as one batched run: every image, its PSNR and its per-layer diagnostics are
    those of the image run alone."""
    model, x, y = build(), _image(batch=3, seed=9), torch.tensor([1, 4, 3])
    attack = get_attack("rgap", **settings)
    both = attack.reconstruct(make_target(model, x, y, per_sample=True), seed=0)
    alone = [attack.reconstruct(make_target(model, x[b:b + 1], y[b:b + 1], per_sample=True), seed=0)
             for b in range(3)]
    assert both.images.shape == x.shape and both.labels.tolist() == y.tolist()
    assert len(both.info["layers"]) == 3 and both.iterations == sum(r.iterations for r in alone)
    for b, rec in enumerate(alone):
        assert _rel(both.images[b], rec.images[0]) < 1e-8
        assert abs(float(psnr(both.images[b:b + 1], x[b:b + 1]).min())
                   - float(psnr(rec.images, x[b:b + 1]).min())) < 0.01
        mine, theirs = both.info["layers"][b], rec.info["layers"][0]
        assert [sorted(d) for d in mine] == [sorted(d) for d in theirs]
        for got, want in zip(mine, theirs):
            same = ("layer", "kind", "unknowns")
            assert [got[k] for k in same] == [want[k] for k in same]
            assert abs(got["solver_iterations"] - want["solver_iterations"]) <= 1
            assert got["residual"] == pytest.approx(want["residual"], rel=1e-6, abs=1e-14)
            assert (got["bias_check"] is None) == (want["bias_check"] is None)
    assert float(psnr(both.images, x).min()) >= 60 or build is relu_cnn


def _problems(gen):
    """Three least-squares problems ``A_k x = b_k`` (40 x 20): condition numbers 2, 1e3 and 1e5;
    the first is consistent, so LSQR stops on it long before the others."""
    A, b = [], []
    for k, cond in enumerate((2.0, 1e3, 1e5)):
        q1, _ = torch.linalg.qr(torch.randn(40, 20, generator=gen, dtype=F64))
        q2, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=F64))
        spectrum = torch.logspace(0, -math.log10(cond), 20, dtype=F64)
        A.append(q1 @ torch.diag(spectrum) @ q2.T)
        noise = 0 if k == 0 else 1e-3 * torch.randn(40, generator=gen, dtype=F64)
        b.append(A[-1] @ torch.randn(20, generator=gen, dtype=F64) + noise)
    return torch.stack(A), torch.stack(b)


def _lsqr(A, b, **kw):
    """LSQR on ``A_k x = b_k`` with an operator whose rounding does not depend on K (products and
    sums along rows: a batched matrix product may round differently from a single one)."""
    return lsqr(lambda x: (A * x[:, None, :]).sum(2), lambda r: (A * r[:, :, None]).sum(1),
                b, torch.zeros(A.shape[0], A.shape[2], dtype=F64), **kw)


def test_batched_lsqr_equals_per_problem_lsqr():
    A, b = _problems(torch.Generator().manual_seed(3))
    x, iterations = _lsqr(A, b, max_iter=400)
    assert iterations[0] < iterations[1:].min() / 2  # the easy problem stops much earlier ...
    for k in range(3):
        alone, its = _lsqr(A[k:k + 1], b[k:k + 1], max_iter=400)
        assert int(its[0]) == int(iterations[k])       # ... and is frozen from then on
        assert torch.equal(x[k], alone[0])
    exact = torch.linalg.lstsq(A[:2], b[:2].unsqueeze(2)).solution.squeeze(2)
    assert _rel(x[:2], exact) < 1e-9
    every, its = _lsqr(A, b, max_iter=400, check_every=1)
    assert torch.equal(every, x) and torch.equal(its, iterations)
    zero, its = _lsqr(A[:2], torch.cat([b[:1], torch.zeros_like(b[:1])]), max_iter=400)
    assert its.tolist() == [iterations[0], 0] and not zero[1].any()  # b = 0: x0, no iteration


def _conv_step(conv, in_shape):
    with torch.no_grad():
        out = conv(torch.zeros(1, *in_shape, dtype=F64))
    return Step("conv", "c", conv, in_shape=in_shape, out_shape=tuple(out.shape[1:]))


@pytest.mark.parametrize("conv", [
    {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1},
    {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "padding": 2, "dilation": 2, "groups": 2},
    {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "padding": 1, "padding_mode": "reflect"},
    {"in_channels": 2, "out_channels": 3, "kernel_size": (2, 3), "padding": "same", "padding_mode": "circular"},
    {"in_channels": 1, "out_channels": 2, "kernel_size": 2, "stride": 3},  # pixels no patch reads
    None,  # Linear
], ids=["strided", "grouped-dilated", "reflect", "same-circular", "uncovered", "linear"])
def test_layer_system_of_k_problems(conv):
    """The explicit matrices equal the operator on unit vectors, the operator is the adjoint of
    its transpose, and problem k of a K-problem system is the system of problem k alone."""
    torch.manual_seed(2)
    if conv is None:
        step, shape = Step("linear", "l", nn.Linear(6, 5).double(), in_shape=(6,), out_shape=(5,)), (6,)
    else:
        shape = (conv["in_channels"], 7, 7)
        step = _conv_step(nn.Conv2d(**conv).double(), shape)
    K, out = 3, (3, *step.out_shape)
    z, g = torch.randn(out, dtype=F64), torch.randn(out, dtype=F64)
    known = torch.rand(out) > 0.3
    system = LayerSystem(step, z, known, g, torch.randn(K, *step.module.weight.shape, dtype=F64))
    U = system.matrix()
    assert torch.allclose(U, operator_columns(system), rtol=1e-13, atol=1e-13)
    x, r = torch.randn(K, *shape, dtype=F64), torch.randn(K, U.shape[1], dtype=F64)
    lhs = (system.apply(x) * r).sum(1)
    assert torch.allclose(lhs, (x * system.apply_t(r)).flatten(1).sum(1), rtol=1e-12)
    x0 = torch.full_like(x, 0.5)
    whole, _ = solve_system(system, {"solver": "dense"}, x0)
    chunked, _ = solve_system(system, {"solver": "dense", "dense_entries": U[0].numel()}, x0)  # one each
    assert torch.allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    for k in range(K):
        one = system.take(slice(k, k + 1))
        assert torch.equal(one.wf, system.wf[k:k + 1]) and torch.equal(one.wg, system.wg[k:k + 1])
        assert torch.allclose(one.apply(x[k:k + 1]), system.apply(x)[k:k + 1], rtol=1e-13, atol=1e-14)
        assert torch.allclose(one.matrix(), U[k:k + 1], rtol=1e-13, atol=1e-14)
