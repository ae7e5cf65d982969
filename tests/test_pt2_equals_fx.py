"""A .pt2 program analyses like its source: for every model of the examples zoo, the per-layer
table of ``torch.export.save``'s archive equals the fx trace's (names, types, shapes, ranks,
rows, statuses), and so do the image status and the chain's scores."""
import importlib
import inspect
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from archscan.config import ScanOptions
from archscan.pipeline import scan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEYS = ("name", "type", "in_shape", "out_shape", "unknowns", "rank", "deficiency", "rows", "status", "attack")


def _zoo():
    for module in ("paper_zoo", "real_style", "resnet", "vit"):
        z = importlib.import_module(f"examples.{module}")
        for name, fn in inspect.getmembers(z, inspect.isfunction):
            sig = inspect.signature(fn)
            if (not name.startswith("_") and fn.__module__ == z.__name__ and not name.endswith("_trained")
                    and "Module" in str(sig.return_annotation) and "model" not in sig.parameters):
                yield f"{module}:{name}", fn


def _table(report: dict) -> list:
    return [{k: layer.get(k) for k in KEYS} for layer in report["layers"]]


@pytest.mark.parametrize("name, factory", list(_zoo()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_pt2_program_scans_as_its_fx_trace(name, factory, tmp_path):
    torch.manual_seed(0)
    model = factory().eval()
    holder = type(sys)(f"pt2_fx_{name.replace(':', '_')}")
    holder.net = model
    sys.modules[holder.__name__] = holder
    options = ScanOptions(input_shape=(3, 32, 32), local="off")
    fx = scan(f"{holder.__name__}:net", options).to_dict()
    path = tmp_path / "m.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), str(path))
    ex = scan(str(path), options).to_dict()
    assert ex["model"]["trace_method"] == "export" and fx["model"]["trace_method"] == "fx"
    assert _table(ex) == _table(fx)
    assert ex["image"] == fx["image"]
    for key in ("verdict", "leakage_score", "predicted_psnr", "copa_index", "ra_index"):
        assert ex["scores"][key] == fx["scores"][key], key
