"""End-to-end: the CLI's exit-code contract, one-line errors, JSON schema, .pt2 and checkpoints."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archscan.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
ZOO = str(ROOT / "examples" / "paper_zoo.py")
BAD = str(ROOT / "examples" / "bad_models.py")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_scan_text_table_and_summary(capsys):
    code, out, err = run(capsys, "scan", f"{ZOO}:cnn6_d", "--input-shape", "3,32,32")
    assert code == 0, err
    assert "conv2" in out and "3188" in out  # theory.md's worked example, exact
    assert "verdict" in out and "COPA" in out


def test_scan_json_schema(capsys, tmp_path):
    target = tmp_path / "r.json"
    code, _, err = run(capsys, "scan", f"{ZOO}:cnn3_c1", "--input-shape", "3,32,32", "--format", "json", "-o", str(target))
    assert code == 0, err
    rep = json.loads(target.read_text())
    for key in ("schema_version", "model", "threat_model", "layers", "scores", "coverage", "findings"):
        assert key in rep
    assert rep["model"]["input_shape"] == [3, 32, 32]
    for key in ("copa_index", "ra_index", "leakage_score", "verdict", "predicted_psnr"):
        assert key in rep["scores"]
    for layer in rep["layers"]:
        assert layer["deficiency"] == layer["unknowns"] - layer["rank"] >= 0
        assert layer["source"] and ":" in layer["source"]
    assert [l["type"] for l in rep["layers"]] == ["Conv2d", "Conv2d", "Linear"]


@pytest.mark.parametrize("argv, needle", [
    (["scan", "examples/missing.py:x", "--input-shape", "3,32,32"], "no such file"),
    (["scan", f"{ZOO}:nothing", "--input-shape", "3,32,32"], "no attribute 'nothing'"),
    (["scan", f"{BAD}:factory_raises", "--input-shape", "3,32,32"], "bad_models.py:"),
    (["scan", f"{BAD}:data_dependent", "--input-shape", "3,32,32"], "bad_models.py:"),
    (["scan", f"{BAD}:text_model", "--input-shape", "3,32,32"], "does not accept a float image"),
    (["scan", f"{ZOO}:cnn6_d", "--input-shape", "3,31,32"], "at module fc"),
    (["scan", f"{ZOO}:cnn6_d", "--input-shape", "3,32"], "three positive integers"),
    (["scan", f"{ZOO}:cnn6_d"], "--input-shape is required"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_debug_shows_traceback():
    proc = subprocess.run([sys.executable, "-m", "archscan", "scan", f"{ZOO}:nothing", "--input-shape",
                           "3,32,32", "--debug"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def _tiny():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))


def test_pt2_program_and_corrupt_pt2(capsys, tmp_path):
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(_tiny().eval(), (torch.randn(1, 1, 8, 8),)), str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    code, out, err = run(capsys, "scan", str(path), "--format", "json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["model"]["trace_method"] == "export"
    assert [l["type"] for l in rep["layers"]] == ["Conv2d", "Linear"]   # the module classes the ops were calls of
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # nothing the user gave is modified
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    code, _, err = run(capsys, "scan", str(bad))
    assert code == 2 and f"{bad}: refused: is not a zip archive" in err


def test_weights_checkpoint_and_mismatch(capsys, tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import torch\n\ndef net(num_classes=3):\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3),"
                   " torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(144, num_classes))\n")
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.manual_seed(0)
    torch.save(_tiny().state_dict(), good)
    torch.save(torch.nn.Linear(2, 2).state_dict(), bad)
    code, out, err = run(capsys, "scan", f"{src}:net", "--input-shape", "1,8,8", "--weights", str(good), "--format", "json")
    assert code == 0, err and json.loads(out)["threat_model"]["weights"] == "given"
    code, _, err = run(capsys, "scan", f"{src}:net", "--input-shape", "1,8,8", "--weights", str(bad))
    assert code == 2 and "does not match the model" in err


def test_strict_mode_turns_unsupported_into_errors(capsys, monkeypatch, tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import torch\n\nclass N(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                   "        self.c = torch.nn.Conv2d(1, 2, 3)\n"
                   "        self.f = torch.nn.Linear(72, 2)\n    def forward(self, x):\n"
                   "        return self.f(torch.flatten(torch.cos(self.c(x)), 1))\n")
    code, out, err = run(capsys, "scan", f"{src}:N", "--input-shape", "1,8,8", "--format", "json")
    rep = json.loads(out)
    assert code == 0 and rep["coverage"]["unsupported"] == 1 and rep["coverage"]["fraction"] < 1
    assert any(f["rule_id"] == "AS100" for f in rep["findings"])
    code, _, err = run(capsys, "scan", f"{src}:N", "--input-shape", "1,8,8", "--strict")
    assert code == 2 and "cos" in err
    monkeypatch.setenv("ARCHSCAN_STRICT", "1")
    code, _, err = run(capsys, "scan", f"{src}:N", "--input-shape", "1,8,8")
    assert code == 2 and "cos" in err


def test_batch_size_is_recorded_and_flagged(capsys):
    code, out, _ = run(capsys, "scan", f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--batch-size", "8",
                       "--format", "json")
    rep = json.loads(out)
    assert code == 0 and rep["threat_model"]["batch_size"] == 8
    flagged = {f["layer"] for f in rep["findings"] if f["rule_id"] == "AS020"}
    assert flagged == {l["name"] for l in rep["layers"]
                       if l["status"] in ("determined", "leak_source") and l["max_batch"] < 8}


@pytest.mark.parametrize("target", ["model", "link"])
def test_an_output_never_overwrites_the_model(tmp_path, capsys, target):
    model = tmp_path / "net.py"
    model.write_text("from torch import nn\ndef net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))\n")
    out = model
    if target == "link":
        out = tmp_path / "report.json"
        out.symlink_to(model)
    before = model.read_text()
    code = main(["scan", f"{model}:net", "--input-shape", "3,2,2", "--format", "json", "-o", str(out)])
    assert code == 2 and "refusing to overwrite an input" in capsys.readouterr().err
    assert model.read_text() == before


def test_reports_are_written_atomically(tmp_path, monkeypatch, capsys):
    from archscan.formatters import outputs
    target = tmp_path / "r.json"
    target.write_text("previous")

    def broken(report, fmt, stream, **style):
        stream.write("half")
        raise KeyboardInterrupt
    monkeypatch.setattr(outputs, "render", broken)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_outputs({}, [outputs.Output("json", str(target))])
    assert target.read_text() == "previous" and list(tmp_path.iterdir()) == [target]


def test_reports_get_an_ordinary_file_mode(tmp_path):
    """The atomic write goes through mkstemp (0600); the report must not stay private to its writer:
    a new file gets 0666 less the umask, a replaced one keeps its mode."""
    import os
    import stat

    from archscan.formatters import outputs
    mask = os.umask(0o022)
    try:
        fresh, kept = tmp_path / "new.json", tmp_path / "old.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        for path in (fresh, kept):
            outputs.write_file(str(path), lambda fh: fh.write("{}"))
    finally:
        os.umask(mask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644 and stat.S_IMODE(kept.stat().st_mode) == 0o640


def test_an_unwritable_output_is_refused_before_the_scan(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["scan", f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--format", f"json:{blocker}/r.json"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write there" in err and len(err.strip().splitlines()) == 1


def _without_timing(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    report.pop("timing", None)
    report.pop("created", None)
    for layer in report.get("layers", []):
        layer.pop("seconds", None)
    return report


def test_same_seed_same_report_with_the_optimisation_view(tmp_path):
    """Byte-identical reports (timing fields aside): the view's work is planned, not timed."""
    outs = []
    for i in range(2):
        path = tmp_path / f"r{i}.json"
        assert main(["scan", f"{ZOO}:cnn_narrow", "--input-shape", "3,32,32", "--local", "on",
                     "--format", "json", "-o", str(path)]) == 0
        outs.append(json.dumps(_without_timing(json.loads(path.read_text())), sort_keys=True))
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["scores"]["optimisation"]["status"] == "ran"


def test_same_seed_same_validation(tmp_path):
    from archscan.config import ScanOptions
    from archscan.validate.run import ValidateOptions, validate
    opts = ValidateOptions(scan=ScanOptions(input_shape=(3, 32, 32), local="off"), attacks=("prior", "ig"),
                           n_images=1, fast=True, settings={"ig": {"iterations": 20}})
    a, b = (validate(f"{ZOO}:cnn_narrow", opts) for _ in range(2))
    strip = lambda r: [(x["attack"], x["image"], x["psnr"], x["ssim"]) for x in r["results"]]  # noqa: E731
    assert strip(a) == strip(b) and a["best"] == b["best"]


def test_a_pt2_program_refuses_another_input_shape(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, 1, 6, 6),)), str(path))
    assert main(["scan", str(path), "--input-shape", "1,6,6", "--local", "off"]) == 0
    capsys.readouterr()
    assert main(["scan", str(path), "--input-shape", "3,32,32"]) == 2
    assert "takes images of shape 1,6,6" in capsys.readouterr().err
