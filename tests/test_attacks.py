"""Tests of the attack library on tiny CPU models (float64, batch of one unless stated)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archscan.validate.attacks import (
    ATTACKS,
    get_attack,
    infer_labels,
    linear_input,
    make_target,
    observe_gradients,
)
from archscan.validate.attacks.base import Target
from archscan.validate.attacks.rgap import (
    LayerSystem,
    RGAPAttack,
    build_chain,
    dense_matrix,
    start_activations,
)
from archscan.validate.metrics import match_order, psnr

torch.set_num_threads(1)
F64 = torch.float64


def _image(shape=(3, 8, 8), seed=0, batch=1):
    """Smooth random images in [0, 1] (upsampled noise: closer to photos than white noise)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, shape[0], shape[1] // 2, shape[2] // 2), generator=gen, dtype=F64)
    return F.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False).clamp(0, 1)


def determined_cnn():
    """conv 3->8 k3 s1 p0 (8x8 -> 6x6) + LeakyReLU + conv 8->8 k3 s2 p1 (6x6 -> 3x3) + Linear.

    Counts: layer 1 has 3*64 = 192 unknowns, 8*36 = 288 forward rows and gradient rows of rank
    3*min(8*9, 64) = 192; layer 2 has 8*36 = 288 unknowns, 72 forward rows and gradient rows of
    rank 8*36 = 288.  ``test_determined_cnn_has_full_rank_systems`` checks the ranks.
    """
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 0), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3, 2, 1),
                         nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 3 * 3, 10))


def deficient_cnn():
    """conv 3->1 k4 s2 (8x8 -> 3x3): 192 unknowns against at most 9 + 3*16 = 57 equations."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 1, 4, 2), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(9, 10))


def _target(model, x, label=3, **kw):
    return make_target(model, x, torch.tensor([label] * len(x)), **kw)


def _psnr(rec, x) -> float:
    return float(psnr(rec.images, x).min())


# ---------------------------------------------------------------------------------------------
# interface


def test_registry_and_unknown_names():
    assert set(ATTACKS) == {"analytic", "rgap", "hybrid", "ig", "dlg", "april", "prior"}
    assert get_attack("rgap").name == "rgap"
    with pytest.raises(ValueError, match="unknown attack 'nope'; choose from"):
        get_attack("nope")
    with pytest.raises(ValueError, match="unknown setting"):
        get_attack("ig", bogus=1)


def test_prior_baseline_is_the_prior_mean_for_every_problem():
    """No gradient is used: every image becomes the mean of the prediction's prior crops."""
    from archscan.analysis.prior import prior_images
    x = _image(batch=3)
    rec = get_attack("prior", images=6).reconstruct(_target(deficient_cnn(), x, per_sample=True), seed=2)
    mean = torch.as_tensor(prior_images((3, 8, 8), 6, 2).mean(axis=0)).view(3, 8, 8)
    assert rec.images.shape == x.shape and rec.iterations == 0
    for image in rec.images:
        assert torch.allclose(image, mean.clamp(0, 1))


def test_target_is_frozen_and_observe_gradients_sums_per_sample():
    model = deficient_cnn().double()
    x, y = _image(batch=3), torch.tensor([1, 2, 3])
    summed = observe_gradients(model, x, y)
    each = observe_gradients(model, x, y, per_sample=True)
    for name, grad in summed.items():
        assert torch.allclose(each[name].sum(0), grad, atol=1e-12)
    target = make_target(model, x, y, per_sample=True)
    with pytest.raises(Exception):
        target.labels = None
    assert len(target.problems()) == 3 and target.problems()[1].gradients["0.weight"].shape == (1, 3, 4, 4)


# ---------------------------------------------------------------------------------------------
# analytic attack and labels


def test_linear_input_is_exact():
    torch.manual_seed(2)
    layer = nn.Linear(20, 5).double()
    x = torch.rand(1, 20, dtype=F64)
    dW, db = torch.autograd.grad(F.cross_entropy(layer(x), torch.tensor([4]), reduction="sum"),
                                 [layer.weight, layer.bias])
    assert torch.allclose(linear_input(dW, db), x[0], atol=1e-12, rtol=0)


class _ViewMLP(nn.Module):
    """Custom forward: the first Linear reads ``x.view(B, -1)``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(48, 16), nn.Linear(16, 6)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


def test_analytic_recovers_image_through_first_linear():
    torch.manual_seed(3)
    x = _image((3, 4, 4))
    for model in (nn.Sequential(nn.Flatten(), nn.Linear(48, 10)), _ViewMLP()):
        rec = get_attack("analytic").reconstruct(_target(model, x, label=2), seed=0)
        assert rec.skipped is None
        assert (rec.images - x).abs().max() < 1e-10
        assert rec.labels.tolist() == [2] and rec.iterations == 0 and rec.seconds >= 0


def test_analytic_skips_conv_models_with_reason():
    attack = get_attack("analytic")
    assert "no Linear layer with bias" in attack.applicable(determined_cnn(), (3, 8, 8))
    assert attack.applicable(nn.Sequential(nn.Flatten(), nn.Linear(48, 10))) is None  # traced
    rec = attack.reconstruct(_target(determined_cnn(), _image()))
    assert rec.images is None and rec.skipped


@pytest.mark.parametrize("bias", [True, False])
def test_label_inference(bias):
    torch.manual_seed(4)
    head = nn.Linear(12, 7, bias=bias).double()
    for label in range(7):
        feats = torch.rand(1, 12, dtype=F64)  # non-negative features, as after a ReLU
        loss = F.cross_entropy(head(feats), torch.tensor([label]), reduction="sum")
        grads = torch.autograd.grad(loss, list(head.parameters()))
        inferred = infer_labels(grads[0], grads[1] if bias else None)
        assert inferred.tolist() == [label]


def test_attacks_infer_labels_when_hidden():
    x = _image(batch=2, seed=5)
    target = make_target(determined_cnn(), x, torch.tensor([6, 1]), reveal_labels=False, per_sample=True)
    assert target.labels is None
    rec = get_attack("rgap").reconstruct(target)
    assert rec.labels.tolist() == [6, 1]
    assert psnr(rec.images, x).min() >= 60


# ---------------------------------------------------------------------------------------------
# R-GAP


def test_determined_cnn_has_full_rank_systems():
    """Every layer's stacked system U has rank = #unknowns (the model really is determined)."""
    x = _image()
    target = _target(determined_cnn(), x)
    chain = build_chain(target.model, (3, 8, 8))
    with torch.no_grad():
        acts = [x]
        for step in chain.steps:
            acts.append(step.module(acts[-1]) if step.module is not None else acts[-1].flatten(1))
        for i in (0, 2):
            step, z = chain.steps[i], chain.steps[i].module(acts[i])
            g = torch.randn_like(z)  # generic g: rank is a property of the geometry
            known = torch.ones_like(z, dtype=torch.bool)
            system = LayerSystem(step, z, known, g, target.gradients[f"{i}.weight"])
            assert int(torch.linalg.matrix_rank(dense_matrix(system)[0])) == acts[i].numel()


def test_rgap_recovers_determined_cnn():
    x = _image()
    target = _target(determined_cnn(), x)
    rec = get_attack("rgap", solver="lsqr").reconstruct(target, seed=0)
    dense = get_attack("rgap", solver="dense").reconstruct(target, seed=0)
    auto = get_attack("rgap").reconstruct(target, seed=0)  # default: dense for small layers
    assert _psnr(rec, x) >= 60 and _psnr(dense, x) >= 60 and _psnr(auto, x) >= 60
    assert (rec.images - dense.images).abs().max() < 1e-6  # matrix-free LSQR == dense lstsq
    assert (auto.images - dense.images).abs().max() < 1e-9
    assert rec.iterations > 0 and rec.settings["solver"] == "lsqr" and rec.settings["seed"] == 0
    assert auto.settings["solver"] == "auto"
    assert all(layer["residual"] < 1e-8 for layer in rec.info["layers"][0])


def test_rgap_deficient_model_is_clearly_worse():
    x = _image()
    good = _psnr(get_attack("rgap").reconstruct(_target(determined_cnn(), x)), x)
    bad = _psnr(get_attack("rgap").reconstruct(_target(deficient_cnn(), x)), x)
    assert bad < 30 and bad < good - 30


def test_rgap_null_space_takes_the_start_image():
    """A deficient system keeps the start image's values in its null space: mid-grey beats black
    on images in [0, 1] (the prediction's prior mean), and hidden layers start at the grey image's
    activations, not at zero."""
    x = _image()
    grey = _psnr(get_attack("rgap", image_start=0.5).reconstruct(_target(deficient_cnn(), x)), x)
    black = _psnr(get_attack("rgap", image_start=0.0).reconstruct(_target(deficient_cnn(), x)), x)
    assert grey > black + 3
    chain = build_chain(determined_cnn().double(), (3, 8, 8))
    starts = start_activations(chain, 0.5, torch.zeros(1, dtype=F64))
    assert len(starts) == len(chain.steps) and bool((starts[0] == 0.5).all())
    with torch.no_grad():
        assert torch.equal(starts[1], chain.steps[0].module(starts[0]))
    assert float(starts[2].abs().max()) > 0


def test_rgap_relu_conv_and_bias_free_head():
    """ReLU: gradient rows where outputs are zero (R-CONV); no head bias: rank-one + label."""
    x = _image(seed=6)
    torch.manual_seed(5)
    relu = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))
    squash = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.Tanh(), nn.Conv2d(8, 8, 3, 2, 1), nn.Sigmoid(),
                           nn.Flatten(), nn.Linear(8 * 16, 10, bias=False))
    for model in (relu, squash):
        rec = get_attack("rgap").reconstruct(_target(model, x, label=7))
        assert _psnr(rec, x) >= 60, type(model[1]).__name__


@pytest.mark.parametrize("padding_mode,groups,dilation",
                         [("reflect", 1, 1), ("zeros", 3, 2), ("circular", 1, 1)])
def test_rgap_conv_geometries(padding_mode, groups, dilation):
    torch.manual_seed(6)
    conv = nn.Conv2d(3, 24, 3, padding=dilation, dilation=dilation, groups=groups, padding_mode=padding_mode)
    model = nn.Sequential(conv, nn.LeakyReLU(0.3), nn.Flatten(), nn.Linear(24 * 64, 5))
    x = _image(seed=7)
    assert _psnr(get_attack("rgap").reconstruct(_target(model, x, label=1)), x) >= 60


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(192, 5)

    def forward(self, x):
        return self.fc(torch.flatten(x + self.conv(x), 1))


def test_rgap_skips_non_chains_with_reasons():
    attack = RGAPAttack()
    pool = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 10))
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(), nn.Linear(144, 10))
    assert "not a chain" in attack.applicable(_Residual())
    assert "pooling" in attack.applicable(pool)
    assert "train mode" in attack.applicable(bn.train())
    assert attack.applicable(bn.eval(), (3, 8, 8)) is None  # eval BatchNorm is a known affine map
    x = _image()
    assert _psnr(attack.reconstruct(_target(bn.eval(), x)), x) >= 60
    summed = make_target(determined_cnn(), _image(batch=2), torch.tensor([1, 2]))
    assert "one gradient per image" in attack.reconstruct(summed).skipped


# ---------------------------------------------------------------------------------------------
# optimisation attacks: objective decreases, runs are reproducible


def _same(a, b) -> bool:
    return torch.equal(a.images, b.images) and a.info["objective"] == b.info["objective"]


def test_hybrid_lowers_objective_and_is_reproducible():
    x = _image()
    target = _target(deficient_cnn(), x)
    attack = get_attack("hybrid", iterations=8, lr=0.05)
    rec, again = attack.reconstruct(target, seed=1), attack.reconstruct(target, seed=1)
    assert rec.info["objective_end"] < rec.info["objective_start"]
    assert torch.equal(rec.images, again.images)
    assert _psnr(rec, x) > _psnr(get_attack("rgap").reconstruct(target), x)  # TV + box help
    exact = attack.reconstruct(_target(determined_cnn(), x))
    assert _psnr(exact, x) >= 60  # determined layers keep their exact solution


@pytest.mark.parametrize("name,settings", [("ig", {"iterations": 6, "record_every": 1}),
                                           ("dlg", {"iterations": 3, "inner": 4})])
def test_gradient_matching_attacks_lower_objective_and_are_reproducible(name, settings):
    target = _target(deficient_cnn(), _image())
    attack = get_attack(name, **settings)
    rec, again = attack.reconstruct(target, seed=3), attack.reconstruct(target, seed=3)
    history = rec.info["objective"]
    assert history[-1] < history[0]
    assert _same(rec, again)
    assert not torch.equal(rec.images, attack.reconstruct(target, seed=4).images)
    assert rec.images.shape == (1, 3, 8, 8) and 0 <= rec.images.min() and rec.images.max() <= 1
    assert rec.iterations > 0 and rec.seconds > 0 and rec.settings["seed"] == 3


def test_ig_batches_independent_problems_and_restarts():
    """Per-sample problems in one vmapped run follow the same path as each problem alone."""
    x, y = _image(batch=2, seed=8), torch.tensor([2, 5])
    model = deficient_cnn()
    attack = get_attack("ig", iterations=5, restarts=2)
    both = attack.reconstruct(make_target(model, x, y, per_sample=True), seed=0)
    assert both.images.shape == (2, 3, 8, 8) and both.labels.tolist() == [2, 5]
    hidden = attack.reconstruct(make_target(model, x, y, per_sample=True, reveal_labels=False), seed=0)
    assert torch.equal(hidden.images, both.images)  # iDLG labels are right, so same run
    joint = get_attack("dlg", iterations=2, inner=3).reconstruct(make_target(model, x, y), seed=0)
    assert joint.images.shape == (2, 3, 8, 8) and sorted(match_order(joint.images, x)) == [0, 1]


def test_dlg_dummy_labels_mode():
    target = _target(deficient_cnn(), _image(), label=4, reveal_labels=False)
    rec = get_attack("dlg", iterations=2, inner=3, label_mode="dummy").reconstruct(target, seed=0)
    assert rec.info["label_mode"] == "dummy" and rec.labels.shape == (1,)
    assert rec.info["objective"][-1] < rec.info["objective"][0]


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attacks_run_on_gpu():
    x = _image().cuda()
    target = make_target(determined_cnn(), x, torch.tensor([3]), device="cuda")
    rec = get_attack("rgap").reconstruct(target)
    assert rec.images.is_cuda and psnr(rec.images, x).min() >= 60
    for name in ("hybrid", "ig", "dlg", "analytic"):
        rec = get_attack(name, **({"iterations": 3} if name != "analytic" else {})).reconstruct(target)
        assert rec.skipped or rec.images.is_cuda
    t32 = make_target(deficient_cnn(), x.float(), torch.tensor([3]), device="cuda", dtype=torch.float32)
    assert get_attack("ig", iterations=3).reconstruct(t32).images.dtype == torch.float32
    assert isinstance(t32, Target) and not math.isnan(float(t32.gradients["0.weight"].sum()))
