"""The matrix-free spectrum of the gradient map (archscan.analysis.spectrum) against an
explicit-Jacobian dense reference (tests/naive.py).

Tolerances (float64 products unless stated):
* hard: the dense fraction (at the estimate's own threshold t) lies in the CMS bracket, up to 1e-10;
* soft / tikhonov: Gauss <= dense <= Gauss-Radau up to 1e-9 relative; on the fixed models
  (n = 64, 64, 192) the Gauss value agrees with the dense one to 1e-8 / 1e-6 / 1e-3 relative at
  tau = 0.3 / 0.1 / 0.03 with m = 20 / 40 / 60 steps (convergence needs m ~ 1/tau);
* m >= n steps reproduce the dense hard, soft and tikhonov fractions and lambda_max to 1e-8;
* float32 products agree with float64 to 1e-4 relative (soft) on a converged case.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive import dense_gram, dense_reference

from archscan.analysis import spectrum as sp
from archscan.analysis.spectrum.quadrature import (
    cms_bracket,
    gauss_rule,
    interpolated_cdf,
    radau_rule,
)

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# Reference: J from plain autograd (independent of spectrum.gradient_map / torch.func)
# --------------------------------------------------------------------------------------------

def explicit_gram(model: nn.Module, image: np.ndarray, label: int) -> np.ndarray:
    """A = JᵀJ with J = d(flat parameter gradient)/d(image) built column by column in float64."""
    net = _copy64(model)
    params = [p for p in net.parameters() if p.requires_grad]

    def flat_grad(x):
        loss = F.cross_entropy(net(x[None]), torch.tensor([label]))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        return torch.cat([g.reshape(-1) for g in grads])

    x = torch.tensor(image, dtype=F64)
    J = torch.autograd.functional.jacobian(flat_grad, x).reshape(-1, x.numel())
    return (J.T @ J).numpy()


def _copy64(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model).double().eval()


def smooth_samples(shape, k, seed):
    """k centred, spatially smooth random images (a crude natural-image stand-in)."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    raw = rng.random((k + 8, c, h + 2, w + 2))
    blur = (raw[..., :-2, :-2] + raw[..., 1:-1, 1:-1] + raw[..., 2:, 2:] + raw[..., 1:-1, :-2]) / 4
    X = blur.reshape(k + 8, -1)
    return X[0].reshape(shape), (X - X.mean(0))[1 : k + 1]


def tiny_mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 10))


def tiny_conv_relu_pool():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))


def tiny_conv_tanh():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, stride=2),
                         nn.Tanh(), nn.Flatten(), nn.Linear(18, 10))


FIXED = {"mlp": (tiny_mlp, (1, 8, 8)), "conv_relu_pool": (tiny_conv_relu_pool, (1, 8, 8)),
         "conv_tanh": (tiny_conv_tanh, (3, 8, 8))}


@pytest.fixture(scope="module", params=sorted(FIXED))
def case(request):
    """(name, model, image, samples, dense A, eigh(A)) for each fixed tiny model."""
    factory, shape = FIXED[request.param]
    model = factory()
    image, V = smooth_samples(shape, 5, seed=10)
    A = explicit_gram(model, image, 3)
    return request.param, model, image, V, A, np.linalg.eigh(A)


def run_for(model, image, V, steps, dtype=F64, **kw):
    op = sp.GramOperator(model, image, 3, dtype=dtype)
    return sp.lanczos(op, V, steps=steps, **kw)


def dense_at(est, run, V, eig, tau):
    return dense_reference(None, V[run.sample_index], tau, threshold=est.thresholds[0], eig=eig)


def assert_bounds(est, ref, slack=1e-9):
    """The rigorous brackets contain the dense values (per sample)."""
    assert np.all(ref.hard >= est.hard.lo - 1e-10) and np.all(ref.hard <= est.hard.hi + 1e-10)
    for name in ("soft", "tikhonov"):
        b, d = getattr(est, name), getattr(ref, name)
        assert np.all(d >= b.lo * (1 - slack) - 1e-300), name
        assert np.all(d <= b.hi * (1 + slack) + 1e-300), name


# --------------------------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------------------------

def test_product_matches_explicit_jacobian(case):
    _, model, image, _, A, _ = case
    op = sp.GramOperator(model, image, 3, dtype=F64)
    np.testing.assert_allclose(dense_gram(op, chunk=16), A, rtol=1e-10,
                               atol=1e-13 * np.abs(A).max())


def test_double_vjp_product_equals_jvp_product(case):
    _, model, image, V, _, _ = case
    a = sp.GramOperator(model, image, 3, dtype=F64, mode="jvp")
    b = sp.GramOperator(model, image, 3, dtype=F64, mode="double-vjp")
    Vt = torch.tensor(V)
    np.testing.assert_allclose(a(Vt).numpy(), b(Vt).numpy(), rtol=1e-10, atol=1e-14)


def test_vmap_batch_equals_single_products(case):
    _, model, image, V, _, _ = case
    op = sp.GramOperator(model, image, 3, dtype=F64)
    Vt = torch.tensor(V)
    np.testing.assert_allclose(op(Vt, batched=True).numpy(), op(Vt, batched=False).numpy(),
                               rtol=1e-12, atol=1e-15)


def test_operator_leaves_model_untouched():
    model = tiny_conv_tanh().train()
    before = [p.detach().clone() for p in model.parameters()]
    sp.GramOperator(model, smooth_samples((3, 8, 8), 1, 0)[0], 0, dtype=F64)
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# --------------------------------------------------------------------------------------------
# Matrix-free vs dense on the fixed tiny models
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau, steps, rtol", [(0.3, 20, 1e-8), (0.1, 40, 1e-6), (0.03, 60, 1e-3)])
def test_fixed_models_brackets_and_soft_agreement(case, tau, steps, rtol):
    """Smaller tau needs more steps (the soft function varies on the scale t = tau² lambda_max)."""
    _, model, image, V, _, eig = case
    run = run_for(model, image, V, steps=steps)
    est = sp.weak_fractions(run, tau)
    ref = dense_at(est, run, V, eig, tau)
    assert_bounds(est, ref)
    np.testing.assert_allclose(est.soft.estimate, ref.soft, rtol=rtol)
    np.testing.assert_allclose(est.tikhonov.estimate, ref.tikhonov, rtol=rtol)
    np.testing.assert_allclose(est.lambda_max, ref.lambda_max, rtol=1e-8)


@pytest.mark.parametrize("steps", [3, 8, 15])
def test_bounds_hold_for_short_runs(case, steps):
    _, model, image, V, _, eig = case
    run = run_for(model, image, V, steps=steps)
    for tau in (0.5, 0.2, 0.1, 0.03, 0.01):
        est = sp.weak_fractions(run, tau)
        assert_bounds(est, dense_at(est, run, V, eig, tau))


def test_full_krylov_space_reproduces_dense(case):
    """m >= n (or an earlier breakdown) makes the Gauss rule the measure itself."""
    _, model, image, V, _, eig = case
    run = run_for(model, image, V, steps=V.shape[1] + 5)
    for tau in (0.3, 0.1, 0.03, 0.01):
        est = sp.weak_fractions(run, tau)
        ref = dense_at(est, run, V, eig, tau)
        np.testing.assert_allclose(est.hard.estimate, ref.hard, atol=1e-8)
        np.testing.assert_allclose(est.hard.hi - est.hard.lo, 0.0, atol=1e-8)
        np.testing.assert_allclose(est.soft.estimate, ref.soft, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(est.tikhonov.estimate, ref.tikhonov, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(est.lambda_max, ref.lambda_max, rtol=1e-8)


def test_float32_products_close_to_float64(case):
    _, model, image, V, _, _ = case
    e64 = sp.weak_fractions(run_for(model, image, V, 40), 0.1)
    e32 = sp.weak_fractions(run_for(model, image, V, 40, dtype=torch.float32), 0.1)
    np.testing.assert_allclose(e32.soft.estimate, e64.soft.estimate, rtol=1e-4)
    np.testing.assert_allclose(e32.lambda_max, e64.lambda_max, rtol=1e-5)


def test_estimate_api_multiple_tau_and_psnr(case):
    _, model, image, V, _, eig = case
    ests = sp.estimate(model, image, 3, V, [0.1, 0.03], steps=30, dtype=F64, seed=1, probes=0)
    assert [e.tau for e in ests] == [0.1, 0.03]
    e = ests[0]
    assert e.products == int(e.steps.sum()) and e.dtype == "float64"
    n = V.shape[1]
    mse = e.overall_soft.estimate * (V[e.sample_index] ** 2).sum(1).mean() / n
    assert e.psnr_soft.estimate == pytest.approx(-10 * np.log10(mse))
    assert e.psnr_hard.lo <= e.psnr_hard.estimate <= e.psnr_hard.hi
    assert e.overall_hard.lo <= e.overall_hard.estimate <= e.overall_hard.hi


# --------------------------------------------------------------------------------------------
# Random small models (hypothesis)
# --------------------------------------------------------------------------------------------

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def random_model(seed, channels, width, act, pool, conv):
    """Conv (or none) -> act -> optional pool -> Linear(width) -> act -> Linear(10), input 1x6x6."""
    torch.manual_seed(seed)
    layers, feat = [], 36
    if conv:
        layers += [nn.Conv2d(1, channels, 3, padding=1), ACTS[act]()]
        feat = channels * 36
        if pool:
            layers += [nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)]
            feat //= 4
    layers += [nn.Flatten(), nn.Linear(feat, width), ACTS[act](), nn.Linear(width, 10)]
    return nn.Sequential(*layers)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), channels=st.integers(1, 4), width=st.integers(2, 16),
       act=st.sampled_from(sorted(ACTS)), pool=st.sampled_from([None, "max", "avg"]),
       conv=st.booleans(), steps=st.integers(2, 36), tau=st.sampled_from([0.3, 0.1, 0.03]))
def test_random_models_against_dense(seed, channels, width, act, pool, conv, steps, tau):
    model = random_model(seed, channels, width, act, pool, conv)
    image, V = smooth_samples((1, 6, 6), 3, seed)
    eig = np.linalg.eigh(explicit_gram(model, image, 3))
    run = run_for(model, image, V, steps=steps)
    est = sp.weak_fractions(run, tau)
    if est.lambda_max <= 0:                      # e.g. all ReLUs dead: nothing depends on x
        assert np.all(est.hard.estimate == 1.0)
        return
    ref = dense_at(est, run, V, eig, tau)
    assert_bounds(est, ref, slack=1e-8)
    if steps >= 36 or np.all(run.beta[np.arange(len(run.steps)), run.steps - 1] == 0):
        np.testing.assert_allclose(est.soft.estimate, ref.soft, rtol=1e-7, atol=1e-14)
    else:                                        # not converged: Gauss is still a lower bound
        assert np.all(est.soft.lo <= ref.soft * (1 + 1e-8) + 1e-300)


# --------------------------------------------------------------------------------------------
# Quadrature building blocks on explicit diagonal matrices
# --------------------------------------------------------------------------------------------

def _lanczos_diag(lam, v, m):
    """Plain numpy Lanczos (full reorthogonalisation) on diag(lam): alpha, beta."""
    Q = [v / np.linalg.norm(v)]
    a, b = [], []
    for _ in range(m):
        w = lam * Q[-1]
        a.append(Q[-1] @ w)
        for _ in range(2):
            w = w - np.array(Q).T @ (np.array(Q) @ w)
        b.append(np.linalg.norm(w))
        Q.append(w / b[-1])
    return np.array(a), np.array(b)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 12), spread=st.floats(1.0, 8.0))
def test_cms_and_radau_bounds_on_diagonal_measures(seed, m, spread):
    rng = np.random.default_rng(seed)
    lam = 10.0 ** rng.uniform(-spread, 0, 200)
    v = rng.standard_normal(200)
    w_true = v ** 2 / (v @ v)
    a, b = _lanczos_diag(lam, v, m)
    nodes, w, _ = gauss_rule(a, b[:-1])
    rnodes, rw = radau_rule(a, b[:-1], b[-1])
    assert np.min(np.abs(rnodes)) < 1e-10 * lam.max()          # the prescribed node 0
    for t in 10.0 ** rng.uniform(-spread, 0, 20):
        est, lo, hi = cms_bracket(nodes, w, t)
        true = w_true[lam < t].sum()
        assert lo - 1e-12 <= true <= hi + 1e-12 and lo <= est <= hi
        assert lo - 1e-12 <= interpolated_cdf(nodes, w, t) <= hi + 1e-12
        f = (t / (lam + t)) ** 2
        exact = w_true @ f
        assert w @ (t / (nodes + t)) ** 2 <= exact * (1 + 1e-9)
        assert rw @ (t / (np.maximum(rnodes, 0) + t)) ** 2 >= exact * (1 - 1e-9)


def test_radau_rule_is_exact_for_degree_2m():
    rng = np.random.default_rng(0)
    lam = rng.uniform(0.1, 2.0, 50)
    v = rng.standard_normal(50)
    w_true = v ** 2 / (v @ v)
    a, b = _lanczos_diag(lam, v, 5)
    rnodes, rw = radau_rule(a, b[:-1], b[-1], a=0.0)
    for p in range(11):                                        # (m+1)-point Radau: degree 2m
        assert rw @ rnodes ** p == pytest.approx(w_true @ lam ** p, rel=1e-9)


def test_cms_bracket_edges():
    nodes, w = np.array([1.0, 2.0, 3.0]), np.array([0.2, 0.5, 0.3])
    assert cms_bracket(nodes, w, 0.5) == (0.0, 0.0, pytest.approx(0.2))
    assert cms_bracket(nodes, w, 2.5) == (pytest.approx(0.7), pytest.approx(0.2), 1.0)
    assert cms_bracket(nodes, w, 1.5, exact=True) == (pytest.approx(0.2),) * 3
    est, lo, hi = cms_bracket(nodes, w, 2.0 + 1e-9, delta=1e-6)   # node within the noise
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# Degenerate inputs, breakdown, budget, seeds
# --------------------------------------------------------------------------------------------

class Blind(nn.Module):
    """A classifier whose output ignores the image: g(x) is constant, A = 0."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.ones(x.shape[0], 4, dtype=x.dtype) + 0 * x.sum())


def test_image_independent_gradients_are_all_weak():
    image, V = smooth_samples((1, 4, 4), 3, 0)
    est = sp.estimate(Blind(), image, 1, V, 0.1, steps=5, dtype=F64)
    assert np.all(est.hard.estimate == 1.0) and est.overall_soft.estimate == 1.0
    assert est.lambda_max == 0.0 and any("A = 0" in n for n in est.notes)


def test_eigenvector_start_breaks_down_after_one_step(case):
    _, model, image, _, A, (lam, U) = case
    v = U[:, -1][None] * 3.0                     # top eigenvector: invariant after one step
    run = run_for(model, image, v, steps=10)
    assert run.steps.tolist() == [1] and run.beta[0, 0] == 0.0
    est = sp.weak_fractions(run, 0.1)
    assert est.lambda_max == pytest.approx(lam[-1], rel=1e-10)
    assert est.hard.estimate[0] == 0.0 and est.hard.hi[0] == 0.0


def test_zero_samples_are_dropped(case):
    _, model, image, V, _, _ = case
    W = np.vstack([V[:2], np.zeros((1, V.shape[1]))])
    run = run_for(model, image, W, steps=5)
    assert sorted(run.sample_index.tolist()) == [0, 1]


def slow_model():
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1),
                         nn.Tanh(), nn.Flatten(), nn.Linear(16 * 16 * 16, 10))


def test_budget_is_respected_and_reported():
    image, V = smooth_samples((3, 16, 16), 6, 0)
    budget = 1.5
    t0 = time.perf_counter()
    est = sp.estimate(slow_model(), image, 0, V, 0.1, steps=10_000, budget_s=budget, batch=1)
    wall = time.perf_counter() - t0
    per = est.seconds / max(est.products, 1)
    assert est.seconds <= budget + 3 * per + 0.05   # at most ~one product late (timer jitter)
    assert wall <= budget + 3 * per + 0.5
    assert any("budget" in n for n in est.notes)


def test_budget_drops_samples_when_steps_do_not_fit():
    image, V = smooth_samples((3, 16, 16), 40, 0)
    est = sp.estimate(slow_model(), image, 0, V, 0.1, steps=50, budget_s=0.6, batch=1)
    assert len(est.sample_index) < 40 and any("kept" in n for n in est.notes)


def test_seed_fixes_the_order_and_the_result(case):
    """Same seed and batch: bit-identical.  (batch=None picks vmap or not from timings, which
    changes the rounding of the products, hence only 1e-12 agreement across such runs.)"""
    _, model, image, V, _, _ = case
    a = sp.estimate(model, image, 3, V, 0.1, steps=12, dtype=F64, seed=7, batch=1)
    b = sp.estimate(model, image, 3, V, 0.1, steps=12, dtype=F64, seed=7, batch=1)
    c = sp.estimate(model, image, 3, V, 0.1, steps=12, dtype=F64, seed=8)
    assert np.array_equal(a.sample_index, b.sample_index)
    np.testing.assert_array_equal(a.soft.estimate, b.soft.estimate)
    assert not np.array_equal(a.sample_index, c.sample_index)
    order = np.argsort(c.sample_index)
    np.testing.assert_allclose(np.sort(a.sample_index), np.sort(c.sample_index))
    np.testing.assert_allclose(a.soft.estimate[np.argsort(a.sample_index)], c.soft.estimate[order],
                               rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Several linearisation points (each prior sample seen from its own image), probes, references
# --------------------------------------------------------------------------------------------

def _points(shape, k, seed):
    image, V = smooth_samples(shape, k, seed)
    rng = np.random.default_rng(seed + 1)
    images = np.clip(image[None] + 0.1 * rng.standard_normal((k, *shape)), 0, 1)
    return images, V


def test_each_row_is_taken_at_its_own_point(case):
    _, model, _, V, _, _ = case
    images, _ = _points(V.shape[1:] if V.ndim > 2 else FIXED[case[0]][1], len(V), 3)
    multi = sp.GramOperator(model, images, 3, dtype=F64)
    Vt = torch.tensor(V)
    rows = np.arange(len(V))
    together = multi(Vt, point_rows=rows, batched=True).numpy()
    one_by_one = multi(Vt, point_rows=rows, batched=False).numpy()
    alone = np.stack([sp.GramOperator(model, images[i], 3, dtype=F64)(Vt[i : i + 1]).numpy()[0] for i in rows])
    np.testing.assert_allclose(together, alone, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(one_by_one, alone, rtol=1e-12, atol=1e-15)


def test_per_point_lanczos_matches_each_points_dense_spectrum(case):
    name, model, _, V, _, _ = case
    images, _ = _points(FIXED[name][1], len(V), 4)
    op = sp.GramOperator(model, images, 3, dtype=F64)
    run = sp.lanczos(op, V, steps=V.shape[1] + 2)
    est = sp.weak_fractions(run, 0.1)
    for row, i in enumerate(run.sample_index):
        A = dense_gram(op, point=int(i))
        ref = dense_reference(A, V[i : i + 1], 0.1)
        assert est.thresholds[row] == pytest.approx(ref.threshold, rel=1e-8)
        assert est.soft.estimate[row] == pytest.approx(ref.soft[0], rel=1e-7, abs=1e-14)


def test_gradient_reference_threshold_is_the_gradients_own_scale(case):
    name, model, image, V, _, _ = case
    op = sp.GramOperator(model, image, 3, dtype=F64)
    run = sp.lanczos(op, V, steps=10)
    x = torch.tensor(image, dtype=F64)[None]
    m64 = _copy64(model)
    loss = F.cross_entropy(m64(x), torch.tensor([3]))
    g2 = sum(float((g ** 2).sum()) for g in torch.autograd.grad(loss, list(m64.parameters())))
    est = sp.weak_fractions(run, 0.2, reference="gradient")
    expected = 0.04 * g2 / (V[run.sample_index] ** 2).sum(1)
    np.testing.assert_allclose(est.thresholds, expected, rtol=1e-9)


def test_probes_count_the_directions_above_the_threshold():
    model = tiny_conv_tanh()
    image, V = smooth_samples((3, 8, 8), 2, 5)
    spec = sp.run_spectrum(model, image, 3, V, steps=200, dtype=F64, probes=48, seed=2)
    est = spec.at(0.1)
    lam = np.linalg.eigvalsh(dense_gram(sp.GramOperator(model, image, 3, dtype=F64)))
    true = int((lam >= 0.01 * lam[-1]).sum())
    assert est.directions.lo <= est.directions.estimate <= est.directions.hi
    # Hutchinson estimate of a projector's trace: std <= sqrt(2 * rank / probes)
    assert abs(est.directions.estimate - true) <= 4 * np.sqrt(2 * max(true, 1) / 48) + 1e-6


def test_unknown_reference_is_refused(case):
    _, model, image, V, _, _ = case
    run = sp.lanczos(sp.GramOperator(model, image, 3, dtype=F64), V, steps=3)
    with pytest.raises(ValueError, match="reference"):
        sp.weak_fractions(run, 0.1, reference="median")


@pytest.mark.parametrize("steps", [2, 6, 20])
def test_smooth_estimates_lie_between_their_bounds(case, steps):
    _, model, image, V, _, eig = case
    est = sp.weak_fractions(run_for(model, image, V, steps=steps), 0.05)
    for b in (est.soft, est.tikhonov):
        assert np.all(b.lo <= b.estimate + 1e-15) and np.all(b.estimate <= b.hi + 1e-15)
        np.testing.assert_allclose(b.estimate, np.sqrt(b.lo * b.hi), rtol=1e-12)


def test_the_view_uses_the_idle_cores_and_restores_the_thread_count(monkeypatch):
    from archscan.analysis import local
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(local.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(local.os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert local.idle_cores() == 1
    monkeypatch.setattr(local.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert local.idle_cores() == 4
    monkeypatch.setattr(local.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert local.idle_cores() == 1
    before = local.torch.get_num_threads()
    with local.threads("cpu"):
        assert local.torch.get_num_threads() == 1
    assert local.torch.get_num_threads() == before
