"""validate: attacks run against real models; prediction and achievement side by side."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from archscan.cli.main import main
from archscan.config import ScanOptions
from archscan.validate.run import ValidateOptions, validate
from archscan.validate.zoo import QUALITY_CEILING_DB, clipped, spearman, validate_zoo

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "examples" / "paper_zoo.py"


def _opts(**kw):
    return ValidateOptions(scan=ScanOptions(input_shape=(3, 32, 32)), n_images=1, fast=True, **kw)


def test_determined_model_is_reconstructed_near_exactly():
    rep = validate(f"{ZOO}:lenet_rgap", _opts(attacks=("rgap",)))
    assert rep["prediction"]["verdict"] == "LEAKS"
    assert rep["best_psnr"] >= 40.0  # float64 closed form on a fully determined model
    assert {"attack", "image", "psnr", "ssim", "seconds"} <= set(rep["results"][0])


def test_deficient_model_is_not():
    rep = validate(f"{ZOO}:cnn_narrow", _opts(attacks=("rgap",)))
    assert rep["prediction"]["verdict"] == "RESISTANT"
    assert rep["best_psnr"] < 25.0


def test_blocked_model_achieves_its_prediction_with_the_prior_baseline():
    """For a blocked image scan predicts the prior mean's PSNR; the no-gradient baseline reaches
    exactly that image, so its PSNR is the prediction up to the image/prior crop mismatch, and the
    best attack is never below it."""
    opts = ValidateOptions(scan=ScanOptions(input_shape=(3, 32, 32)), n_images=2, fast=True,
                           attacks=("prior", "rgap"))
    rep = validate(f"{ZOO}:cnn_narrow", opts)
    prior = {r["image"]: r["psnr"] for r in rep["results"] if r["attack"] == "prior"}
    assert len(prior) == 2
    for image, best in rep["best"].items():
        assert best["psnr"] >= prior[image]
    assert abs(rep["best_psnr"] - rep["prediction"]["predicted_psnr"]) < 6.0


def test_skipped_attacks_say_why():
    rep = validate(f"{ZOO}:cnn_c4", _opts(attacks=("analytic",)))
    assert rep["attacks"][0]["skipped"] and rep["results"] == [] and rep["best_psnr"] is None


def test_cli_writes_json_and_grid(tmp_path, capsys):
    code = main(["validate", f"{ZOO}:mlp2", "--input-shape", "3,32,32", "--attacks", "analytic",
                 "--images", "2", "--fast", "--format", "json", "-o", str(tmp_path)])
    assert code == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["prediction"]["verdict"] == "LEAKS" and len(rep["results"]) == 2
    assert min(r["psnr"] for r in rep["results"]) > 100  # the analytic attack is exact
    assert (tmp_path / "grid.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, needle", [
    (["--attacks", "nope"], "unknown attack 'nope'"),
    (["--images", "{empty}"], "--images"),
])
def test_bad_input_exit_2(tmp_path, capsys, argv, needle):
    argv = [a.replace("{empty}", str(tmp_path)) for a in argv]
    code = main(["validate", f"{ZOO}:mlp2", "--input-shape", "3,32,32", *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_gpu(capsys):
    code = main(["validate", f"{ZOO}:mlp2", "--input-shape", "3,32,32", "--device", "cuda"])
    assert code == 2 and "no CUDA device" in capsys.readouterr().err


def test_zoo_spearman_and_scatter(tmp_path):
    manifest = tmp_path / "m.toml"
    rows = [("mlp2", "LEAKS"), ("cnn_partial", "PARTIAL"), ("cnn_narrow", "RESISTANT")]
    manifest.write_text("".join(f'[[model]]\nspec = "{ZOO}:{n}"\ninput_shape = [3, 32, 32]\nnum_classes = 10\n'
                                f'expected_chain_verdict = "{v}"\n' for n, v in rows))
    rep = validate_zoo(str(manifest), _opts(attacks=("analytic", "rgap")), plot_path=str(tmp_path / "s.png"))
    assert [m["verdict"] for m in rep["models"]] == [v for _, v in rows]
    assert rep["spearman"] == 1.0  # leaks > partial > resistant, predicted and achieved alike
    assert (tmp_path / "s.png").exists()


def test_spearman_edge_cases():
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0


def test_quality_ceiling_is_the_8_bit_quantisation_floor():
    """Above the ceiling PSNR is float round-off: two exact reconstructions tie there."""
    mse = (1 / 255) ** 2 / 12           # uniform quantisation noise of 8-bit images in [0, 1]
    assert QUALITY_CEILING_DB == pytest.approx(-10 * np.log10(mse))
    assert clipped([20.0, 150.0, 300.0]) == [20.0, QUALITY_CEILING_DB, QUALITY_CEILING_DB]
    # predicted 150 vs achieved 140 and 300 on exact models: noise once unclipped, a tie once clipped
    pred, best = [150, 150, 20, 10], [300, 140, 18, 9]
    assert spearman(clipped(pred), clipped(best)) == 1.0
    assert spearman(pred, best) < 1.0


def test_conditioning_reported_with_weights(tmp_path, capsys):
    src = tmp_path / "m.py"
    src.write_text("import torch\n\ndef net(num_classes=3):\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3),"
                   " torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(144, num_classes))\n")
    torch.manual_seed(0)
    ns = {}
    exec(src.read_text(), ns)
    torch.save(ns["net"]().state_dict(), tmp_path / "w.pt")
    assert main(["scan", f"{src}:net", "--input-shape", "1,8,8", "--weights", str(tmp_path / "w.pt"),
                 "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    cond = rep["layers"][0]["conditioning"]
    assert cond["sigma_min"] > 0 and cond["condition"] >= 1 and cond["sigma_max"] >= cond["sigma_min"]
