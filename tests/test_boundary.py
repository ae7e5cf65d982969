"""The error boundary: every failure is one line and a documented exit code, never 1 (the gate's)."""
import subprocess
import sys
from pathlib import Path

import pytest

from archscan.cli import boundary
from archscan.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
MODELS = '''
import sys
import torch
from torch import nn

def exits():
    sys.exit(3)

class ExitsInForward(nn.Module):
    def forward(self, x):
        sys.exit(5)

def interrupted():
    raise KeyboardInterrupt

def fine():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
'''


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(MODELS)
    return str(path)


@pytest.mark.parametrize("name", ["exits", "ExitsInForward"])
def test_user_code_calling_sys_exit_is_an_input_error(models, name, capsys):
    assert main(["scan", f"{models}:{name}", "--input-shape", "3,2,2", "--exit-zero"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sys.exit" in err[0]


def test_ctrl_c_in_user_code_is_130_without_a_traceback(models, capsys):
    assert main(["scan", f"{models}:interrupted", "--input-shape", "3,2,2"]) == 130
    assert capsys.readouterr().err.strip() == "archscan: interrupted"


def test_an_internal_error_is_3_with_the_traceback_saved(monkeypatch, models, capsys):
    def broken(*a, **k):
        raise ZeroDivisionError("a bug of ours")
    monkeypatch.setattr("archscan.pipeline.scan_loaded", broken)   # what `archscan scan` calls after loading
    assert main(["scan", f"{models}:fine", "--input-shape", "3,2,2", "--exit-zero"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: ZeroDivisionError: a bug of ours" in err[0]
    saved = Path(err[0].split("traceback saved to ")[1].split(" (please")[0])
    assert "ZeroDivisionError" in saved.read_text()


def test_debug_shows_the_traceback_and_keeps_the_exit_code(models, capsys):
    assert main(["scan", f"{models}:exits", "--input-shape", "3,2,2", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("archscan: error:")


def test_a_missing_model_is_2_even_with_exit_zero(capsys):
    assert main(["scan", "nowhere.py:net", "--input-shape", "3,2,2", "--exit-zero"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_closed_pipe_ends_quietly(models):
    cmd = (f"{sys.executable} -m archscan scan {models}:fine --input-shape 3,2,2 --local off --format json "
           "| head -c 10 >/dev/null; echo ${PIPESTATUS[0]}")
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.stdout.strip() in ("0", str(boundary.EXIT_BROKEN_PIPE)) and "Traceback" not in out.stderr
    assert "Broken pipe" not in out.stderr


def test_every_exit_code_is_documented():
    readme = (ROOT / "README.md").read_text()
    for code in boundary.CODES:
        assert f"| {code} |" in readme, code


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--num-classes", "0"), ("--batch-size", "0"),
                                         ("--local-budget", "0")])
def test_bad_option_values_are_one_line_and_2(models, capsys, flag, value):
    assert main(["scan", f"{models}:fine", "--input-shape", "3,2,2", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
