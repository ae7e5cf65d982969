"""`archscan compare`: one row per model, a per-layer diff over the shared structure, text/json/markdown."""
import io
import json

import pytest
from archscan_reports import ROOT, ZOO, cached_scan, variant, zoo_report

from archscan import api
from archscan.cli.main import main
from archscan.formatters import render
from archscan.report.compare import Comparison, comparison, layer_diff, model_labels, worst_layer

# two widths of one conv (as cnn6 vs cnn6_d in the zoo, 36 vs 20 filters), small enough to scan in a second
VARIANTS = '''
import torch.nn as nn
from collections import OrderedDict

def _net(width, num_classes=10):
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, width, 3, stride=2, padding=1)), ("act1", nn.LeakyReLU(0.2)),
        ("conv2", nn.Conv2d(width, 8, 3, padding=1)), ("act2", nn.LeakyReLU(0.2)),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(8 * 4 * 4, num_classes))]))

def wide(num_classes=10):
    return _net(8, num_classes)

def narrow(num_classes=10):
    return _net(1, num_classes)
'''


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(api, "scan", cached_scan)


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "variants.py"
    path.write_text(VARIANTS)
    return str(path)


@pytest.fixture(scope="module")
def zoo_cmp():
    return comparison([zoo_report("cnn_c4"), zoo_report("cnn_narrow")])


def test_rows_per_model(zoo_cmp):
    rows = {m.label: m for m in zoo_cmp.models}
    assert set(rows) == {"cnn_c4", "cnn_narrow"}
    assert rows["cnn_c4"].verdict == "LEAKS" and rows["cnn_narrow"].verdict == "RESISTANT"
    assert rows["cnn_c4"].worst_layer.name == "conv1"           # nearest the image, fully determined
    assert rows["cnn_narrow"].worst_layer.name == "fc"             # only the head's input leaks fully
    for key in ("leakage_score", "copa_index", "predicted_psnr"):
        assert key in zoo_cmp.to_dict()["models"][0]


def test_layer_diff_aligns_by_name(zoo_cmp):
    rows = {r.name: r for r in zoo_cmp.layers}
    assert list(rows) == ["conv1", "conv2", "conv3", "conv4", "fc"]
    assert rows["conv1"].shared and rows["fc"].shared and not rows["conv3"].shared
    assert rows["conv3"].cells[1] is None and zoo_cmp.shared_layers == 3
    assert rows["conv2"].changed


def test_worst_layer_none_when_nothing_is_exposed():
    def unexposed(d):
        for layer in d["layers"]:
            layer["attack"]["rank"] = 0
    assert worst_layer(zoo_report("cnn_narrow")) is not None
    assert worst_layer(variant(zoo_report("cnn_narrow"), unexposed)) is None


def test_labels_fall_back_to_specs():
    assert model_labels(["a.py:net", "b.py:net"]) == ["a.py:net", "b.py:net"]
    assert model_labels(["a.py:x", "m.pt2"]) == ["x", "m.pt2"]


def test_cli_two_widths_of_one_conv(variants, capsys):
    code = main(["compare", f"{variants}:wide", f"{variants}:narrow", "--input-shape", "1,8,8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "verdict", "leakage"]
    assert any(l.startswith("wide ") for l in lines) and any(l.startswith("narrow ") for l in lines)
    assert "per layer" in out and "* conv1" in out and "  fc" in out


def test_cli_json_and_markdown(variants, tmp_path, capsys):
    target = tmp_path / "cmp.json"
    assert main(["compare", f"{variants}:wide", f"{variants}:narrow", "--input-shape", "1,8,8",
                 "--format", "json", "-o", str(target)]) == 0
    data = json.loads(target.read_text())
    assert data["kind"] == "comparison" and data["schema_version"] == "1.0"
    assert [m["label"] for m in data["models"]] == ["wide", "narrow"]
    assert [r["name"] for r in data["layers"]] == ["conv1", "conv2", "fc"] and data["shared_layers"] == 3
    conv2 = data["layers"][1]
    assert conv2["cells"][0]["unknowns"] != conv2["cells"][1]["unknowns"] and conv2["changed"]
    buf = io.StringIO()
    render(Comparison.from_dict(data), "markdown", buf)
    assert Comparison.from_dict(data).to_dict() == data
    assert "| wide |" in buf.getvalue() and "### Shared layers" in buf.getvalue()


def test_cli_compare_zoo_models_share_layers(capsys):
    assert main(["compare", f"{ZOO}:cnn_c4", f"{ZOO}:cnn_narrow", "--input-shape", "3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "not shared: conv3, conv4" in out


@pytest.mark.parametrize("argv, needle", [
    (["compare", f"{ZOO}:cnn_c4", "--input-shape", "3,32,32"], "at least two models"),
    (["compare", f"{ZOO}:cnn_c4", "examples/nope.py:x", "--input-shape", "3,32,32"], "no such file"),
    (["compare", f"{ZOO}:cnn_c4", f"{ZOO}:nothing", "--input-shape", "3,32,32"], "no attribute 'nothing'"),
])
def test_compare_errors_exit_2(capsys, argv, needle):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_api_compare_is_public():
    from archscan.config import ScanOptions
    cmp = api.compare([f"{ZOO}:cnn_c4", f"{ZOO}:cnn_narrow"], ScanOptions(input_shape=(3, 32, 32)))
    assert cmp.models[0].spec.endswith("cnn_c4") and layer_diff([zoo_report("cnn_c4")])[0].shared
