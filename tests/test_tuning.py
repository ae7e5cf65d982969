"""Tuned attacks (validate --budget): grids, batched configurations, bookkeeping, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archscan.cli import main
from archscan.config import ScanOptions
from archscan.validate.attacks import ATTACKS, get_attack, make_target
from archscan.validate.attacks.ig import RowAdam, milestones
from archscan.validate.attacks.prior import prior_mean_image
from archscan.validate.attacks.tuning import BUDGETS, GRIDS, configurations, label
from archscan.validate.run import ValidateOptions, validate

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "examples" / "paper_zoo.py"
F64 = torch.float64


def _image(shape=(3, 8, 8), seed=0, batch=1):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch, shape[0], shape[1] // 2, shape[2] // 2), generator=gen, dtype=F64)
    return F.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False).clamp(0, 1)


def _deficient():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 1, 4, 2), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(9, 10))


def _target(batch=2):
    x = _image(batch=batch, seed=4)
    return make_target(_deficient(), x, torch.arange(batch) + 1, per_sample=True), x


# ---------------------------------------------------------------------------------------------
# grids


@pytest.mark.parametrize("attack", sorted(GRIDS))
@pytest.mark.parametrize("budget", BUDGETS)
def test_grids_start_with_the_fixed_configuration_and_have_no_duplicates(attack, budget):
    configs = configurations(attack, budget)
    defaults = ATTACKS[attack].defaults
    shortened = budget == "fast" and attack != "rgap"  # --fast's iteration counts
    assert configs[0] == ({"iterations": {"ig": 300, "hybrid": 60, "dlg": 20}[attack]} if shortened else {})
    full = [tuple(sorted((k, repr(v)) for k, v in {**defaults, **c}.items())) for c in configs]
    assert len(set(full)) == len(full)
    assert all(set(c) <= set(defaults) for c in configs)  # every axis is a real setting
    assert label(attack, {**defaults, **configs[0]}, defaults) == ("it=" + str(configs[0]["iterations"]) if shortened
                                                                   else "default")


def test_grid_sizes_grow_with_the_budget_and_tv_includes_zero():
    for attack in ("ig", "hybrid", "dlg"):
        sizes = [len(configurations(attack, b)) for b in BUDGETS]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1], attack
    tvs = {c.get("tv", ATTACKS["ig"].defaults["tv"]) for c in configurations("ig", "thorough")}
    assert 0.0 in tvs and {1e-4, 1e-2} <= tvs
    assert {c.get("init", "random") for c in configurations("ig", "thorough")} == {"random", "grey", "prior"}
    with pytest.raises(ValueError, match="unknown budget"):
        configurations("ig", "huge")
    # --set overrides apply to every configuration
    assert all(c["iterations"] == 7 for c in configurations("ig", "default", {"iterations": 7}))


# ---------------------------------------------------------------------------------------------
# batched configurations


def test_row_adam_is_torch_adam_with_multistep_decay():
    torch.manual_seed(0)
    x0, grads = torch.rand(2, 5, dtype=F64), [torch.randn(2, 5, dtype=F64) for _ in range(9)]
    ref = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones(9), gamma=0.1)
    mine = x0.clone()
    row = RowAdam(mine, torch.tensor([0.3, 0.3], dtype=F64), 9)
    for g in grads:
        ref.grad = g.clone()
        opt.step()
        sched.step()
        row.step(g)
    assert torch.equal(mine, ref.detach())


def test_grid_rows_follow_their_single_configuration_runs_exactly():
    """Configurations batched as rows of one vmapped run give bit-identical results to each
    configuration run alone (the fixed default included)."""
    target, _ = _target()
    configs = [{}, {"tv": 0.0}, {"init": "prior", "restarts": 2}, {"lr": 0.03, "loss": "l2", "signed": False},
               {"init": "grey", "tv": 1e-4}]
    attack = get_attack("ig", iterations=6)
    grid = attack.reconstruct_grid(target, configs, seed=2)
    for config, rec in zip(configs, grid):
        alone = get_attack("ig", iterations=6, **config).reconstruct(target, seed=2)
        assert torch.equal(rec.images, alone.images), config
        assert rec.info["final_objective"] == alone.info["final_objective"]
        assert rec.settings["seed"] == 2 and rec.info["batch_configurations"] == len(configs)
    assert sum(r.seconds for r in grid) == pytest.approx(grid[0].info["batch_seconds"])


def test_starts_random_grey_prior():
    """Restart 0 of a deterministic start is that image; random starts are shared by configurations."""
    target, _ = _target(batch=1)
    zero = dict(iterations=0, record_every=1)
    grey, prior, rand, rand2 = get_attack("ig", **zero).reconstruct_grid(
        target, [{"init": "grey"}, {"init": "prior"}, {}, {"tv": 0.5}], seed=5)
    assert bool((grey.images == 0.5).all())
    assert torch.allclose(prior.images[0], prior_mean_image((3, 8, 8), 5).clamp(0, 1))
    assert torch.equal(rand.images, rand2.images) and not torch.equal(rand.images, grey.images)
    for init in ("grey", "prior"):  # DLG: the same starts
        dlg = get_attack("dlg", iterations=0, init=init).reconstruct(target, seed=5)
        assert torch.allclose(dlg.images, grey.images if init == "grey" else prior.images)
    with pytest.raises(ValueError, match="unknown init"):
        get_attack("ig", init="black").reconstruct(target)


def test_dlg_and_rgap_variants():
    target, x = _target(batch=1)
    base = get_attack("dlg", iterations=2, inner=3).reconstruct(target, seed=0)
    again = get_attack("dlg", iterations=2, inner=3, tv=0.0, restarts=1).reconstruct(target, seed=0)
    assert torch.equal(base.images, again.images)  # the new settings' defaults change nothing
    two = get_attack("dlg", iterations=2, inner=3, restarts=2, tv=1e-3).reconstruct(target, seed=0)
    assert len(two.info["final_objective"]) == 1 and two.images.shape == x.shape
    grey = get_attack("rgap").reconstruct(target)
    prior = get_attack("rgap", image_start="prior").reconstruct(target)
    assert not torch.equal(grey.images, prior.images)  # the null space takes the start's values


# ---------------------------------------------------------------------------------------------
# validate --budget: bookkeeping, selection, determinism, tuned >= fixed


def _opts(budget, attacks=("prior", "ig"), n=2, **kw):
    return ValidateOptions(scan=ScanOptions(input_shape=(3, 32, 32)), n_images=n, fast=True, attacks=attacks,
                           budget=budget, **kw)


@pytest.fixture(scope="module")
def lenet5_fast():
    return validate(f"{ZOO}:lenet5", _opts("fast", ("prior", "rgap", "ig")))


def test_every_configuration_is_reported_and_winners_are_the_extremes(lenet5_fast):
    rep = lenet5_fast
    names = rep["images"]["names"]
    runs = {a["attack"]: a for a in rep["attacks"]}
    assert runs["ig"]["configurations"] == len(configurations("ig", "fast"))
    assert runs["rgap"]["skipped"] and not [r for r in rep["results"] if r["attack"] == "rgap"]  # avg pool
    rows = rep["results"]
    for a in ("prior", "ig"):
        for g in runs[a]["grid"]:
            mine = [r for r in rows if r["config"] == g["config"]]
            assert sorted(r["image"] for r in mine) == sorted(names), g
            assert all({"psnr", "ssim", "objective", "match", "seconds", "tv", "label"} <= set(r) for r in mine)
    for n in names:
        each = [r for r in rows if r["image"] == n]
        assert rep["best"][n]["psnr"] == max(r["psnr"] for r in each)
        assert rep["selected"][n]["match"] == min(r["match"] for r in each)
        chosen = next(r for r in each if r["config"] == rep["selected"][n]["config"])
        assert chosen["psnr"] == rep["selected"][n]["psnr"]
        ig = [r for r in each if r["attack"] == "ig"]
        assert runs["ig"]["oracle"][n]["psnr"] == max(r["psnr"] for r in ig)
        assert runs["ig"]["selected"][n]["match"] == min(r["match"] for r in ig)
    assert rep["best_psnr"] >= rep["selected_psnr"]
    ig_rows = [r for r in rows if r["attack"] == "ig" and r["label"].endswith("tv=0")]
    assert all(r["objective"] == pytest.approx(r["match"], rel=1e-4) for r in ig_rows)  # tv=0: own objective = match


def test_tuned_best_beats_fixed_default(lenet5_fast):
    """The grid contains the fixed configuration, so the oracle best can never be lower; on LeNet-5
    the tuned grid finds a clearly better configuration (a smaller TV weight)."""
    fixed = validate(f"{ZOO}:lenet5", _opts(None, ("prior", "ig")))
    for n, b in fixed["best"].items():
        assert lenet5_fast["best"][n]["psnr"] >= b["psnr"]
    assert lenet5_fast["best_psnr"] >= fixed["best_psnr"] + 1.0
    default = {r["image"]: r["psnr"] for r in lenet5_fast["results"] if r["config"] == "ig#0"}
    assert default == {r["image"]: r["psnr"] for r in fixed["results"] if r["attack"] == "ig"}


def test_validate_is_deterministic_at_a_fixed_seed():
    opts = _opts("fast", ("prior", "ig"), n=1, settings={"ig": {"iterations": 40}})
    one, two = (validate(f"{ZOO}:cnn_partial", opts) for _ in range(2))
    strip = lambda rep: [{k: v for k, v in r.items() if k != "seconds"} for r in rep["results"]]  # noqa: E731
    assert strip(one) == strip(two) and one["best"] == two["best"] and one["selected"] == two["selected"]
    reseeded = ValidateOptions(scan=ScanOptions(input_shape=(3, 32, 32), seed=1), n_images=1, attacks=("ig",),
                               budget="fast", settings={"ig": {"iterations": 40}})
    assert strip(validate(f"{ZOO}:cnn_partial", reseeded)) != [r for r in strip(one) if r["attack"] == "ig"]


def test_cli_budget_and_set(tmp_path, capsys):
    code = main(["validate", f"{ZOO}:cnn_partial", "--input-shape", "3,32,32", "--attacks", "prior,ig", "--images", "1",
                 "--budget", "fast", "--set", "ig.iterations=20", "--format", "json", "-o", str(tmp_path)])
    assert code == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["budget"] == "fast" and all(g["iterations"] == 20 for g in rep["attacks"][1]["grid"])
    assert (tmp_path / "grid.png").exists()
    capsys.readouterr()
    assert main(["validate", f"{ZOO}:cnn_partial", "--input-shape", "3,32,32", "--set", "ig.bogus=1"]) == 2
    assert "--set ig.bogus=1" in capsys.readouterr().err
