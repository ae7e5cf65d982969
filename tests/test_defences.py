"""Defences (--defence): their spelling, what they do to the shared update (validate), and the noise
floor the optimisation view predicts with (scan), checked against the dense reference."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from archscan import defences as dfn
from archscan.analysis import spectrum as sp
from archscan.config import ScanOptions
from archscan.errors import InputError
from naive import dense_reference

from test_spectrum import FIXED, explicit_gram, smooth_samples, tiny_mlp

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# spelling


@pytest.mark.parametrize("text, kind, values", [
    ("dp:sigma=0.01,clip=1", "dp", {"sigma": 0.01, "clip": 1.0}),
    ("dp:sigma=0.5", "dp", {"sigma": 0.5}),
    ("prune:ratio=0.9", "prune", {"ratio": 0.9}),
    ("quant:bits=4", "quant", {"bits": 4.0}),
])
def test_parse_good_spellings(text, kind, values):
    d = dfn.parse_defence(text)
    assert d.kind == kind and d.to_dict() == {"kind": kind, **values}
    assert dfn.parse_defence(str(d)) == d          # the printed form parses back


@pytest.mark.parametrize("text, words", [
    ("noise:sigma=1", "unknown defence 'noise'"),
    ("dp:clip=1", "dp needs sigma"),
    ("dp:sigma=abc", "is not a number"),
    ("dp:sigma=-1", "out of range"),
    ("dp:sigma=0.1,clip=0", "out of range"),
    ("dp:sigma=0.1,rate=2", "'rate=2' is not a setting of dp"),
    ("prune:ratio=1", "out of range"),
    ("quant:bits=2.5", "out of range"),
    ("quant:bits=nan", "out of range"),
])
def test_parse_refuses_with_the_text(text, words):
    with pytest.raises(InputError) as e:
        dfn.parse_defence(text)
    assert text in str(e.value) and words in str(e.value)


# --------------------------------------------------------------------------------------------
# validate: the shared update


def _grads(rows: int = 3, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(rows, 4, 5, generator=gen, dtype=F64) * 3,
            "b": torch.randn(rows, 5, generator=gen, dtype=F64) * 3}


def _norms(g: dict) -> torch.Tensor:
    return torch.sqrt(sum(v.flatten(1).pow(2).sum(1) for v in g.values()))


def test_dp_clips_each_image_and_adds_seeded_noise():
    g = _grads()
    clipped = dfn.apply_defences((dfn.parse_defence("dp:sigma=0,clip=1"),), g, 0, per_sample=True)
    np.testing.assert_allclose(_norms(clipped), 1.0, rtol=1e-12)     # every row was above 1
    for k in g:   # clipping only rescales
        cos = torch.nn.functional.cosine_similarity(clipped[k].flatten(1), g[k].flatten(1))
        np.testing.assert_allclose(cos, 1.0, rtol=1e-12)
    d = (dfn.parse_defence("dp:sigma=0.5,clip=1"),)
    a, b, c = (dfn.apply_defences(d, g, s, per_sample=True) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in g) and not torch.equal(a["w"], c["w"])
    residual = torch.cat([(a[k] - clipped[k]).flatten() for k in g])
    assert abs(float(residual.std()) - 0.5) < 0.15                    # std sigma * clip
    assert all(torch.equal(g[k], _grads()[k]) for k in g)             # the input is not modified


def test_prune_zeroes_the_smallest_fraction_per_tensor_and_row():
    g = _grads()
    out = dfn.apply_defences((dfn.parse_defence("prune:ratio=0.75"),), g, 0, per_sample=True)
    for k in g:
        flat, orig = out[k].flatten(1), g[k].flatten(1)
        zeroed = (flat == 0).sum(1)
        assert torch.all(zeroed == int(0.75 * flat.shape[1]))
        kept = flat != 0
        assert torch.equal(flat[kept], orig[kept])                       # survivors are untouched
        for r in range(len(flat)):
            assert orig[r][~kept[r]].abs().max() <= orig[r][kept[r]].abs().min()


def test_quantisation_levels_and_error():
    g = _grads()
    for bits in (2, 4, 8):
        out = dfn.apply_defences((dfn.parse_defence(f"quant:bits={bits}"),), g, 0, per_sample=True)
        for k in g:
            for r in range(len(g[k])):
                vals = torch.unique(out[k][r])
                top = g[k][r].abs().max()
                assert len(vals) <= 2 ** bits - 1
                step = 2 * top / (2 ** bits - 2)
                assert float((out[k][r] - g[k][r]).abs().max()) <= float(step) / 2 + 1e-12


def test_summed_gradients_are_one_row():
    g = {k: v[0] for k, v in _grads().items()}
    out = dfn.apply_defences((dfn.parse_defence("dp:sigma=0,clip=2"),), g, 0, per_sample=False)
    assert out["w"].shape == g["w"].shape
    np.testing.assert_allclose(float(_norms({k: v.unsqueeze(0) for k, v in out.items()})[0]), 2.0, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# scan: the noise floor


def test_noise_variance_in_units_of_the_unclipped_gradient():
    d = (dfn.parse_defence("dp:sigma=0.1,clip=2"),)
    assert dfn.noise_variance(d, 1.0) == pytest.approx((0.1 * 2) ** 2)        # ||g|| = 1 < clip: not clipped
    assert dfn.noise_variance(d, 100.0) == pytest.approx((0.1 * 10) ** 2)     # ||g|| = 10: std sigma * ||g||
    assert dfn.noise_variance((dfn.parse_defence("dp:sigma=0.3"),), 50.0) == pytest.approx(0.09)
    assert dfn.noise_variance((dfn.parse_defence("prune:ratio=0.5"),), 4.0) == 0.0


@pytest.mark.parametrize("name", sorted(FIXED))
@pytest.mark.parametrize("s2", [1e-6, 1e-3, 1.0])
def test_noisy_fractions_match_the_dense_reference(name, s2):
    """Lanczos quadrature with a noise floor vs the explicit A's eigendecomposition (the dense
    reference writes the soft error as bias + variance, T²(A+T)^-2 + t_n A (A+T)^-2)."""
    factory, shape = FIXED[name]
    model = factory()
    image, V = smooth_samples(shape, 5, seed=10)
    eig = np.linalg.eigh(explicit_gram(model, image, 3))
    run = sp.lanczos(sp.GramOperator(model, image, 3, dtype=F64), V, steps=V.shape[1] + 5)
    floors = sp.noise_floors(run, lambda g2: s2)
    est = sp.weak_fractions(run, 0.1, floors=floors)
    ref = dense_reference(None, V[run.sample_index], 0.1, threshold=est.thresholds[0], eig=eig, t_noise=floors)
    np.testing.assert_allclose(est.soft.estimate, ref.soft, rtol=1e-8)
    np.testing.assert_allclose(est.tikhonov.estimate, ref.tikhonov, rtol=1e-8)
    np.testing.assert_allclose(est.hard.estimate, ref.hard, atol=1e-8)
    short = sp.weak_fractions(sp.lanczos(sp.GramOperator(model, image, 3, dtype=F64), V, steps=4), 0.1,
                              floors=floors)
    ref = dense_reference(None, V[run.sample_index], 0.1, threshold=short.thresholds[0], eig=eig, t_noise=floors)
    for name in ("soft", "tikhonov"):      # Gauss <= exact <= Gauss-Radau: the functions stay completely monotone
        b, d = getattr(short, name), getattr(ref, name)
        assert np.all(d >= b.lo * (1 - 1e-9)) and np.all(d <= b.hi * (1 + 1e-9)), name


def test_more_noise_loses_more_and_no_noise_is_the_undefended_figure():
    model = tiny_mlp()
    image, V = smooth_samples((1, 8, 8), 5, seed=10)
    run = sp.lanczos(sp.GramOperator(model, image, 3, dtype=F64), V, steps=30)
    plain = sp.weak_fractions(run, 0.05).overall_soft.estimate
    assert sp.weak_fractions(run, 0.05, floors=sp.noise_floors(run, lambda g: 0.0)).overall_soft.estimate == \
        pytest.approx(plain, rel=1e-12)
    fracs = [sp.weak_fractions(run, 0.05, floors=sp.noise_floors(run, lambda g, s=s: s)).overall_soft.estimate
             for s in (1e-8, 1e-5, 1e-2, 10.0, 1e4)]
    assert all(b > a for a, b in zip(fracs, fracs[1:])) and fracs[0] >= plain and fracs[-1] > 0.99


# --------------------------------------------------------------------------------------------
# end to end


def _scan(spec, *defences, local="auto"):
    from archscan.pipeline import scan
    opts = ScanOptions(input_shape=(3, 32, 32), num_classes=10, defences=dfn.parse_defences(defences), local=local)
    return scan(spec, opts).to_dict()


def test_noise_decides_with_the_optimisation_view_even_when_the_chain_leaks():
    """mlp2's chain determines the image; DP noise must not leave that exact-gradient answer as the
    verdict: the optimisation view runs and decides, and strong noise makes the image unrecoverable."""
    plain = _scan(f"{ROOT}/examples/paper_zoo.py:mlp2")
    assert plain["scores"]["verdict"] == "LEAKS" and plain["scores"]["optimisation"]["status"] == "not_needed"
    noisy = _scan(f"{ROOT}/examples/paper_zoo.py:mlp2", "dp:sigma=10,clip=1")
    s = noisy["scores"]
    assert s["optimisation"]["status"] == "ran" and s["decided_by"] == "optimisation"
    assert s["verdict"] != "LEAKS" and s["predicted_psnr"] < 20 and "Gaussian noise" in s["verdict_note"]
    assert noisy["threat_model"]["defences"] == [{"kind": "dp", "sigma": 10.0, "clip": 1.0}]


def test_unmodelled_defences_are_named_and_leave_the_figure_unchanged():
    plain = _scan(f"{ROOT}/examples/paper_zoo.py:mlp2", local="off")
    pruned = _scan(f"{ROOT}/examples/paper_zoo.py:mlp2", "prune:ratio=0.9", local="off")
    assert pruned["scores"]["leakage_score"] == plain["scores"]["leakage_score"]
    note = pruned["scores"]["verdict_note"]
    assert "prune:ratio=0.9 not modelled" in note and "bounds what leaks from above" in note


def test_validate_attacks_the_defended_update(tmp_path):
    from archscan.validate.run import ValidateOptions, validate
    runs = []
    for d in ((), ("dp:sigma=1,clip=1",), ("dp:sigma=1,clip=1",)):
        scan = ScanOptions(input_shape=(3, 32, 32), num_classes=10, defences=dfn.parse_defences(d), local="off")
        rep = validate(f"{ROOT}/examples/paper_zoo.py:mlp2", ValidateOptions(scan=scan, attacks=("prior", "analytic"),
                                                                    n_images=1))
        runs.append(rep)
    exact, noisy, again = (r["best_psnr"] for r in runs)
    assert exact > 100 and noisy < 40                      # the analytic attack is exact only without noise
    assert noisy == again and runs[1]["threat_model"]["defences"] == [{"kind": "dp", "sigma": 1.0, "clip": 1.0}]


def _main(capsys, *argv):
    from archscan.cli.main import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_bad_defence_is_one_line_exit_2(capsys):
    code, _, err = _main(capsys, "scan", f"{ROOT}/examples/paper_zoo.py:mlp2", "--input-shape", "3,32,32",
                         "--defence", "dp:sigma=x")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == ["archscan: error: --defence dp:sigma=x: sigma='x' is not a number"]


def test_pyproject_defence_key(tmp_path, capsys, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.archscan]\ndefence = ["dp:sigma=0.5,clip=1", "quant:bits=8"]\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = _main(capsys, "scan", f"{ROOT}/examples/paper_zoo.py:mlp2", "--input-shape", "3,32,32",
                           "--local", "off", "--format", "json")
    assert code in (0, 1), err
    rep = json.loads(out)
    assert rep["threat_model"]["defences"] == [{"kind": "dp", "sigma": 0.5, "clip": 1.0}, {"kind": "quant", "bits": 8.0}]


def test_a_batch_client_clips_each_image_then_adds_the_noise_once():
    g = _grads(rows=4)
    clipped_sum = {k: v.sum(0) for k, v in dfn.apply_defences((dfn.parse_defence("dp:sigma=0,clip=1"),), g, 0,
                                                              per_sample=True).items()}
    quiet = dfn.apply_to_batch((dfn.parse_defence("dp:sigma=0,clip=1"),), g, 0)
    assert all(torch.allclose(quiet[k], clipped_sum[k], rtol=1e-12) for k in g)     # clip each, then sum
    noisy = dfn.apply_to_batch((dfn.parse_defence("dp:sigma=0.5,clip=1"),), g, 0)
    residual = torch.cat([(noisy[k] - clipped_sum[k]).flatten() for k in g])
    assert abs(float(residual.std()) - 0.5) < 0.15                 # one draw of std sigma*C on the sum, not sqrt(B) of them
    pruned = dfn.apply_to_batch((dfn.parse_defence("prune:ratio=0.5"),), g, 0)
    assert all(int((pruned[k] == 0).sum()) == pruned[k].numel() // 2 for k in g)     # pruning acts on the sum


def test_validate_attacks_one_clients_batch(capsys):
    """--batch-size B: the B images' summed gradient is attacked jointly; rows are paired with the
    true images by an assignment, and the gradient match is one figure for the batch."""
    from archscan.validate.run import ValidateOptions, validate
    scan = ScanOptions(input_shape=(3, 32, 32), num_classes=10, batch_size=3, local="off")
    rep = validate(f"{ROOT}/examples/paper_zoo.py:cnn_narrow",
                   ValidateOptions(scan=scan, attacks=("prior", "ig", "rgap"), n_images=3, fast=True))
    assert rep["threat_model"]["batch_size"] == 3
    ig = [r for r in rep["results"] if r["attack"] == "ig"]
    assert [r["image"] for r in ig] == rep["images"]["names"] and len({r["match"] for r in ig}) == 1
    assert any("summed batch of 3" in (a["skipped"] or "") for a in rep["attacks"] if a["attack"] == "rgap")
    from archscan.cli.main import main
    code = main(["validate", f"{ROOT}/examples/paper_zoo.py:cnn_narrow", "--input-shape", "3,32,32",
                 "--batch-size", "4", "--images", "2"])
    assert code == 2 and "give --images 4 (got 2 images)" in capsys.readouterr().err
