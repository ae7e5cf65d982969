"""The reliability issue's remaining cases, each as the user meets it: one parser for shapes and
counts, config keys checked with suggestions, non-finite weights, sizes refused before any
allocation, a print in forward kept off stdout, a baseline of another model, module specs resolved
alike by both entry points, and report paths named when they leave the working tree."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from archscan.analysis import memory
from archscan.cli.main import main
from archscan.config.pyproject import load
from archscan.config.values import MAX_BATCH, parse_shape
from archscan.errors import InputError
from archscan.model.footprint import activation_values

ROOT = Path(__file__).resolve().parents[1]
MODELS = '''
import torch
from torch import nn

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 2, 3)
        self.f = nn.Linear(2 * 4 * 4, 3)
    def forward(self, x):
        return self.f(torch.relu(self.c(x)).flatten(1))

class Printy(Small):
    def forward(self, x):
        print("hello from forward")
        return super().forward(x)

class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3 * 6 * 6, 3)
    def forward(self, x):
        return self.head(x.flatten(1))

class AnySize(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 2, 3)
        self.f = nn.Linear(2, 3)
    def forward(self, x):
        return self.f(torch.relu(self.c(x)).mean((2, 3)))

class NaNs(Small):
    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.c.weight[0, 0, 0, 0] = float("inf")

class IntOut(Small):
    def forward(self, x):
        return super().forward(x).argmax(1)

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.head = nn.Linear(18 * 6, 3)
    def forward(self, x):
        t = x.reshape(x.shape[0], 18, 6)
        a = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) / 6 ** 0.5, -1)
        return self.head((a @ self.v(t)).flatten(1))

class NoParams(nn.Module):       # GroupNorm (affine), a scale and pooling only
    def __init__(self):
        super().__init__()
        self.g, self.p = nn.GroupNorm(1, 3), nn.AvgPool2d(2)
    def forward(self, x):
        return (self.p(self.g(x)) * 2.0).flatten(1)[:, :3]

class PoolFirst(Small):
    def forward(self, x):
        return self.f(torch.relu(self.c(torch.nn.functional.max_pool2d(x, 1))).flatten(1))

def uses_sibling():
    from sibling_helper import build
    return build()
'''
SIBLING = '''
from torch import nn
def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3))
'''
SHAPE = ["--input-shape", "3,6,6", "--local", "off"]


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text(MODELS)
    (tmp_path / "sibling_helper.py").write_text(SIBLING)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# one parser for shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, shape", [("3,32,32", (3, 32, 32)), ("3x32x32", (3, 32, 32)),
                                         (" 3, 32 ,32 ", (3, 32, 32)), ([1, 28, 28], (1, 28, 28))])
def test_shapes_accepted_everywhere_alike(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["3,32,32,", "3,,32,32", "3,32", "3,32,32,1", "0,32,32", "3;32;32",
                                  "3.0,32,32", "", [3, 32], [3, 32, True]])
def test_bad_shapes_refused_with_one_line(text):
    with pytest.raises(InputError, match="expected three positive integers"):
        parse_shape(text)


@pytest.mark.parametrize("command", [["scan", "m.py:Small", "--local", "off"],
                                     ["validate", "m.py:Small", "--attacks", "prior"],
                                     ["compare", "m.py:Small", "m.py:Other"],
                                     ["init", "--print"]])
def test_every_command_refuses_a_trailing_comma(models, command, capsys):
    assert main([*command, "--input-shape", "3,6,6,"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "--input-shape '3,6,6,'" in err[0]


def test_config_shape_and_batch_use_the_same_rules(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.archscan]\ninput-shape = "3,32,32,"\n')
    with pytest.raises(InputError, match="input-shape = '3,32,32,'"):
        load(tmp_path / "pyproject.toml")
    (tmp_path / "pyproject.toml").write_text(f'[tool.archscan]\nbatch-size = {MAX_BATCH + 1}\n')
    with pytest.raises(InputError, match="must be between 1 and"):
        load(tmp_path / "pyproject.toml")


@pytest.mark.parametrize("size", ["0", str(MAX_BATCH + 1)])
def test_batch_size_out_of_range_is_refused(models, size, capsys):
    assert main(["scan", "m.py:Small", *SHAPE, "--batch-size", size]) == 2
    assert "--batch-size" in _err(capsys)[0]


# config keys ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("table, needle", [
    ('fial-on = "leaks"', "did you mean 'fail-on'?"),
    ("input_shap = [3, 32, 32]", "did you mean 'input-shape'?"),
    ('[tool.archscan.gate]\nfail-on = "leaks"', "[tool.archscan.gate] is misplaced: write fail-on directly"),
])
def test_unknown_or_misplaced_keys_get_a_suggestion(tmp_path, table, needle):
    (tmp_path / "pyproject.toml").write_text(f"[tool.archscan]\n{table}\n")
    with pytest.raises(InputError) as info:
        load(tmp_path / "pyproject.toml")
    assert needle in str(info.value)


def test_a_named_config_without_the_table_is_an_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.arch-scan]\nfail-on = "leaks"\n')
    with pytest.raises(InputError, match=r"has no \[tool.archscan\] table \(found \[tool.arch-scan\]"):
        load(tmp_path / "pyproject.toml")


@pytest.mark.parametrize("value", ['format = ["json:~/x.json"]', 'format = "sarif:../outside.sarif"',
                                   'output = "/tmp/elsewhere.txt"'])
def test_config_cannot_write_outside_its_project(tmp_path, value):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(f"[tool.archscan]\n{value}\n")
    with pytest.raises(InputError, match="outside this project"):
        load(root / "pyproject.toml")


def test_config_may_write_inside_its_project(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.archscan]\nformat = ["json:reports/a.json"]\n')
    assert load(tmp_path / "pyproject.toml").values["format"]


# the model's values and size -----------------------------------------------------------------------

def test_non_finite_weights_are_refused_naming_the_tensor(models, capsys):
    assert main(["scan", "m.py:NaNs", *SHAPE]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "parameter c.weight holds 1 NaN or infinite value" in err[0]


def test_fake_forward_counts_the_activations_without_allocating():
    from torch import nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    # conv 256 + relu 256 + flatten (a view, counted) 256 + linear 5; at most the input (192) and
    # the weights' views (the Linear's transposed weight) on top
    values = activation_values(net, (3, 8, 8))
    params = sum(p.numel() for p in net.parameters())
    assert 256 * 3 + 5 <= values <= 256 * 3 + 5 + 192 + params
    huge = activation_values(net.__class__(nn.Conv2d(3, 4, 3, padding=1)), (3, 30000, 30000))
    assert huge >= 4 * 30000 * 30000   # 3.6e9 values counted, nothing allocated


def test_a_scan_too_large_for_the_machine_is_refused_before_tracing(models, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)   # a machine with 1000 bytes free
    traced = []
    monkeypatch.setattr("archscan.pipeline.trace_model", lambda *a: traced.append(a))
    assert main(["scan", "m.py:Small", *SHAPE]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "GiB may be used here" in err[0] and "smaller --input-shape" in err[0]
    assert not traced


@pytest.mark.parametrize("name, codes", [("Attention", {0, 1}), ("NoParams", {0, 1}), ("PoolFirst", {0, 1}),
                                         ("IntOut", {2})])
def test_odd_models_get_an_answer_or_one_line_never_a_crash(models, name, codes, capsys):
    assert main(["scan", f"m.py:{name}", *SHAPE, "-q", "--exit-zero"]) in codes
    err = _err(capsys)
    assert not err or (len(err) == 1 and "internal error" not in err[0]), err


def test_the_optimisation_view_over_memory_is_skipped_with_the_reason(models, monkeypatch):
    from archscan.config import ScanOptions
    from archscan.pipeline import scan
    real = memory.available_bytes
    # room for the scan itself, not for the view's cached gradient graphs
    monkeypatch.setattr(memory, "points_that_fit", lambda *a, **k: (_ for _ in ()).throw(
        memory.OverBudget("the optimisation view needs ~9.0 GiB for one image; 1.0 GiB may be used here")))
    report = scan("m.py:Small", ScanOptions(input_shape=(3, 6, 6))).to_dict()
    view = report["scores"]["optimisation"]
    assert view["status"] == "skipped" and "needs ~9.0 GiB" in view["reason"]
    assert report["scores"]["verdict"] != "RESISTANT"
    assert memory.available_bytes is real


# stdout carries only the report --------------------------------------------------------------------

def test_print_in_forward_goes_to_stderr_not_into_the_json(models, capsys):
    assert main(["scan", "m.py:Printy", *SHAPE, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model"]["class"] == "Printy"
    assert "hello from forward" in err


# baselines -----------------------------------------------------------------------------------------

def test_a_baseline_of_another_model_or_shape_is_refused(models, capsys):
    assert main(["scan", "m.py:AnySize", *SHAPE, "--format", "json:base.json"]) == 0
    capsys.readouterr()
    assert main(["scan", "m.py:Other", *SHAPE, "--baseline", "base.json"]) == 2
    assert "a report of another model (m.py:AnySize: no layer in common" in _err(capsys)[0]
    assert main(["scan", "m.py:AnySize", "--input-shape", "3,7,7", "--local", "off", "--baseline", "base.json"]) == 2
    assert "a report at input shape 3,6,6, this scan is at 3,7,7" in _err(capsys)[0]
    assert main(["scan", "m.py:AnySize", *SHAPE, "--baseline", "base.json", "-q"]) == 0


# module resolution -----------------------------------------------------------------------------------

def test_a_model_file_imports_its_siblings(models, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["scan", str(models / "m.py") + ":uses_sibling", *SHAPE, "-q"]) == 0


@pytest.mark.parametrize("entry", [[sys.executable, "-m", "archscan"],
                                   [str(Path(sys.executable).with_name("archscan"))]])
def test_both_entry_points_resolve_module_specs_from_the_working_directory(models, entry):
    done = subprocess.run([*entry, "scan", "m:Small", *SHAPE, "-q"], capture_output=True, text=True,
                          cwd=models, timeout=300)
    assert done.returncode == 0, done.stderr


# outputs ---------------------------------------------------------------------------------------------

def test_compare_refuses_to_overwrite_a_model_and_writes_atomically(models, capsys):
    before = (models / "m.py").read_text()
    assert main(["compare", "m.py:Small", "m.py:Other", *SHAPE, "-o", "m.py"]) == 2
    assert (models / "m.py").read_text() == before and "refusing to overwrite" in _err(capsys)[0]
    assert main(["compare", "m.py:Small", "m.py:Other", *SHAPE, "-o", "cmp.txt"]) == 0
    assert "Small" in (models / "cmp.txt").read_text()
    assert not list(models.glob(".cmp.txt.*"))


def test_validate_refuses_a_file_as_its_folder_and_the_model_file(models, capsys):
    assert main(["validate", "m.py:Small", "--input-shape", "3,6,6", "--attacks", "prior", "-o", "m.py"]) == 2
    assert "that is a file" in _err(capsys)[0]


def test_a_report_outside_the_working_tree_is_named(models, tmp_path, capsys):
    (tmp_path / "work").mkdir()
    target = tmp_path / "outside.json"
    import os
    os.chdir(tmp_path / "work")
    assert main(["scan", str(models / "m.py") + ":Small", *SHAPE, "--format", f"json:{target}"]) == 0
    assert f"wrote {target.resolve()} (outside the working directory" in capsys.readouterr().err
    assert json.loads(target.read_text())["model"]["class"] == "Small"


# crafted checkpoints -----------------------------------------------------------------------------------

class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(models, capsys):
    import torch
    torch.save({"c.weight": _RunsCode()}, models / "evil.pt")
    assert main(["scan", "m.py:Small", *SHAPE, "--weights", "evil.pt"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "refused: unpickling it would call" in err[0] and "system" in err[0]
    assert "weights_only` set to `False`" not in err[0] and not (models / "pwned").exists()
