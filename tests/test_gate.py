"""The gate: policy checks over report dicts, the CLI's exit codes 0/1/2, --exit-zero, --baseline,
the composite action's scan step and the pytest plugin."""
import copy
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from archscan_reports import ROOT, ZOO, cached_scan, variant, zoo_report

from archscan import api
from archscan.cli.main import main
from archscan.pytest_plugin import assert_leakage
from archscan.report.gate import (
    Policy,
    evaluate,
    exposed_layers,
    layer_regressions,
    resistance,
)

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(api, "scan", cached_scan)


@pytest.fixture(scope="module")
def leaks():
    return zoo_report("cnn_c4")


@pytest.fixture(scope="module")
def resistant():
    return zoo_report("cnn_narrow")


def run(capsys, *argv):
    code = main(["scan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- policy (pure functions) ---------------------------------------------------------------------

def test_fail_on_leaks_names_the_attack_chain(leaks, resistant):
    result = evaluate(leaks, Policy(fail_on="leaks"))
    assert not result.passed
    assert result.responsible_layers() == ["conv1", "conv2", "conv3", "conv4", "fc"] == list(exposed_layers(leaks))
    assert "via conv1" in result.failed[0].message and result.failed[0].rule_id == "AS201"
    assert evaluate(resistant, Policy(fail_on="leaks")).passed
    assert evaluate(resistant, Policy(fail_on="partial")).passed


def test_fail_on_partial_fails_partial_and_leaks(leaks):
    partial = variant(leaks, lambda d: d["scores"].update(verdict="PARTIAL", leakage_score=0.5))
    assert not evaluate(partial, Policy(fail_on="partial")).passed
    assert evaluate(partial, Policy(fail_on="leaks")).passed
    assert not evaluate(leaks, Policy(fail_on="partial")).passed


def test_fail_under_is_a_minimum_resistance(leaks, resistant):
    r = resistance(resistant)
    assert resistance(leaks) == 0.0 and r == round(1 - resistant.scores.leakage_score, 6) and 0.75 < r < 1
    failed = evaluate(leaks, Policy(fail_under=0.5))
    assert not failed.passed and failed.checks[0].rule_id == "AS200" and failed.checks[0].layers
    assert evaluate(resistant, Policy(fail_under=r - 0.01)).passed
    assert not evaluate(resistant, Policy(fail_under=r + 0.01)).passed


def test_fail_under_needs_a_verified_figure(resistant):
    """With the optimisation view off, the chain's resistance is not established: fail-under fails."""
    def off(d):
        d["scores"].update(verdict="UNVERIFIED", verdict_note="the optimisation-attack view did not run (off)")
        d["scores"]["optimisation"] = {"status": "off", "reason": "--local off", "verdict": None}
    unverified = variant(resistant, off)
    check = evaluate(unverified, Policy(fail_under=0.1)).checks[0]
    assert not check.passed and "not established" in check.message
    assert evaluate(unverified, Policy(fail_under=0.0)).passed
    assert not evaluate(unverified, Policy(fail_on="partial")).passed and evaluate(unverified, Policy(fail_on="leaks")).passed


def test_zero_minimum_and_no_policy_pass(leaks):
    assert evaluate(leaks, Policy(fail_under=0.0)).passed
    assert evaluate(leaks, Policy()).passed and not Policy().active


def _weaker(d: dict) -> None:
    """The same model with conv2 only partly determined and a lower score: what a PR regressed from."""
    d["scores"].update(verdict="PARTIAL", leakage_score=0.8)
    conv2 = next(l for l in d["layers"] if l["name"] == "conv2")
    conv2["status"] = "partial"
    conv2["attack"]["rank"] -= 500


def _weaker_baseline(report):
    return variant(report, _weaker)


def test_baseline_fails_only_on_regressions(leaks):
    same = evaluate(leaks, Policy(fail_on="leaks", baseline=copy.deepcopy(leaks)))
    assert same.policy.baseline_model == leaks.model.spec
    assert same.passed, [c.message for c in same.failed]
    assert "already so in the baseline" in same.checks[0].message

    worse = evaluate(leaks, Policy(fail_on="leaks", baseline=_weaker_baseline(leaks)))
    assert not worse.passed
    assert {c.id for c in worse.failed} == {"fail-on", "baseline-score", "baseline-verdict", "baseline-layers"}
    layers_check = next(c for c in worse.failed if c.id == "baseline-layers")
    assert layers_check.layers == ("conv2",) and "conv2: partial" in layers_check.message
    assert [w["name"] for w in layer_regressions(leaks, _weaker_baseline(leaks))] == ["conv2"]


def test_gate_result_to_dict_is_json(leaks):
    d = evaluate(leaks, Policy(fail_under=0.5, fail_on="leaks")).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["passed"] is False and d["responsible_layers"][0] == "conv1"


# ---- CLI exit codes ------------------------------------------------------------------------------

def test_exit_0_resistant_model(capsys):
    code, out, err = run(capsys, f"{ZOO}:cnn_narrow", "--input-shape", "3,32,32", "--fail-on", "partial",
                         "--fail-under", "0.5")
    assert code == 0, err
    assert "gate       passed" in out


def test_exit_1_leaking_model_names_layers(capsys):
    code, out, err = run(capsys, f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--fail-on", "leaks")
    assert code == 1, err
    assert "FAILED" in out and "layers: conv1 [examples/paper_zoo.py:116]" in out


def test_exit_1_with_json_on_stdout_says_why_on_stderr(capsys):
    code, out, err = run(capsys, f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--fail-under", "0.5", "--format", "json")
    assert code == 1
    assert json.loads(out)["gate"]["responsible_layers"][0] == "conv1"
    assert err.startswith("archscan: gate FAILED") and "conv1 [examples/paper_zoo.py:116]" in err


@pytest.mark.parametrize("extra", [[], ["--exit-zero"], ["--fail-on", "leaks", "--exit-zero"]])
def test_exit_2_misspelt_model_never_passes(capsys, extra):
    code, _, err = run(capsys, f"{ZOO}:cnn_c44", "--input-shape", "3,32,32", *extra)
    assert code == 2 and "no attribute 'cnn_c44'" in err
    code, _, err = run(capsys, "examples/paper_zooo.py:cnn_c4", "--input-shape", "3,32,32", *extra)
    assert code == 2 and "no such file" in err


def test_exit_zero_reports_but_passes(capsys):
    code, out, _ = run(capsys, f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--fail-on", "leaks", "--exit-zero")
    assert code == 0 and "FAILED" in out


def test_no_gate_no_failure(capsys):
    code, out, _ = run(capsys, f"{ZOO}:cnn_c4", "--input-shape", "3,32,32")
    assert code == 0 and "gate" not in out


@pytest.mark.parametrize("argv, needle", [
    (["--fail-under", "1.5"], "must be in [0, 1]"),
    (["--baseline", "missing.json"], "no such file"),
])
def test_bad_gate_input_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", *argv)
    assert code == 2 and needle in err


def test_baseline_cli(capsys, tmp_path, leaks):
    same, worse, bad = tmp_path / "same.json", tmp_path / "worse.json", tmp_path / "bad.json"
    same.write_text(json.dumps(leaks.to_dict()))
    worse.write_text(json.dumps(_weaker_baseline(leaks).to_dict()))
    bad.write_text("{not json")
    args = (f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--fail-on", "leaks", "--baseline")
    assert run(capsys, *args, str(same))[0] == 0
    code, out, _ = run(capsys, *args, str(worse))
    assert code == 1 and "conv2: partial" in out
    code, _, err = run(capsys, *args, str(bad))
    assert code == 2 and "not a JSON report" in err


# ---- the composite action's scan step ------------------------------------------------------------

def _action(tmp_path, model, **extra):
    env = dict(os.environ, **extra, INPUT_MODEL=model, INPUT_INPUT_SHAPE="3,32,32", INPUT_FAIL_ON="leaks",
               INPUT_OUTPUT_DIR=str(tmp_path / "res"), GITHUB_OUTPUT=str(tmp_path / "out.txt"),
               GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"), ARCHSCAN_NO_PROGRESS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", str(ROOT / "action" / "scan.sh")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # the step never fails itself; the Gate step does
    outputs = dict(l.split("=", 1) for l in (tmp_path / "out.txt").read_text().splitlines())
    _action.stdout = proc.stdout
    return outputs, (tmp_path / "summary.md").read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_action_scan_step_fails_leaky_model_with_layers(tmp_path):
    outputs, summary = _action(tmp_path, f"{ZOO}:cnn_c4")
    assert outputs["exit-code"] == "1"
    assert "Gate: ❌ failed" in summary and "layers responsible: `conv1` (examples/paper_zoo.py:116)" in summary
    sarif = json.loads(Path(outputs["sarif"]).read_text())
    assert any(r["ruleId"] == "AS201" for r in sarif["runs"][0]["results"])
    # annotations on the diff without code scanning: workflow commands on the step's stdout
    assert "::error file=examples/paper_zoo.py,line=116,title=archscan AS001::" in _action.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_action_sarif_category_reaches_the_file(tmp_path):
    outputs, _ = _action(tmp_path, f"{ZOO}:cnn_c4", ARCHSCAN_SARIF_CATEGORY="models/cnn")
    sarif = json.loads(Path(outputs["sarif"]).read_text())
    assert sarif["runs"][0]["automationDetails"]["id"] == "models/cnn/"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_action_scan_step_misspelt_model_is_an_error(tmp_path):
    outputs, summary = _action(tmp_path, f"{ZOO}:cnn_c44")
    assert outputs["exit-code"] == "2" and "sarif" not in outputs
    assert "archscan: error (exit 2)" in summary and "no attribute 'cnn_c44'" in summary


# ---- pytest plugin -------------------------------------------------------------------------------

def _tiny():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))


def test_plugin_entry_point_is_registered():
    eps = entry_points(group="pytest11")
    assert any(ep.value == "archscan.pytest_plugin" for ep in eps)


def test_assert_leakage_message_is_the_layer_table():
    with pytest.raises(AssertionError) as info:
        assert_leakage(_tiny(), (1, 8, 8), fail_on="leaks")
    msg = str(info.value)
    assert "<Sequential> fails the leakage gate" in msg
    assert "layer" in msg and "attack rows" in msg and "FAIL fail-on leaks" in msg


def test_assert_leakage_passes_resistant_spec():
    report = assert_leakage(f"{ZOO}:cnn_narrow", (3, 32, 32), min_score=0.5)
    assert report["gate"]["passed"] and report["scores"]["verdict"] == "RESISTANT"


def test_plugin_specs_are_relative_to_the_rootdir(pytester):
    pytester.makefile(".ini", pytest="[pytest]\n")
    models = pytester.mkdir("models")
    (models / "net.py").write_text("import torch\n"
                                   "def net():\n"
                                   "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))\n")
    tests = pytester.mkdir("tests")
    (tests / "test_m.py").write_text("def test_spec(archscan_scan):\n"
                                     "    assert archscan_scan('models/net.py:net', (1, 8, 8))['scores']['verdict'] == 'LEAKS'\n")
    import os
    os.chdir(tests)   # pytest run from tests/: the spec still names models/ under the rootdir
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", str(tests / "test_m.py"))
    result.assert_outcomes(passed=1)


def test_plugin_fixtures_in_a_user_test_suite(pytester):
    pytester.makepyfile(test_user="""
        import torch

        def net():
            return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                       torch.nn.Linear(144, 3))

        def test_scan(archscan_scan):
            assert archscan_scan(net, (1, 8, 8))["scores"]["verdict"] == "LEAKS"

        def test_gate(assert_leakage):
            assert_leakage(net(), (1, 8, 8), fail_on="leaks")
    """)
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fails the leakage gate*", "*FAIL fail-on leaks*"])


# ---- the composite action's pull-request comment step ----------------------------------------------

FAKE_GH = """#!/usr/bin/env bash
# records every call; a listing answers with EXISTING (a comment id) when set; FAIL makes writes fail
echo "$*" >> "$GH_LOG"
for a in "$@"; do case "$a" in body=@*) cp "${a#body=@}" "$GH_LOG.body" ;; esac; done
case "$*" in
  *--paginate*) [ -n "${EXISTING:-}" ] && echo "$EXISTING"; exit 0 ;;
  *) [ -n "${FAIL:-}" ] && exit 1; exit 0 ;;
esac
"""


def _comment(tmp_path, summary_text, **extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    summary = tmp_path / "summary.md"
    summary.write_text(summary_text)
    log = tmp_path / "gh.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "SUMMARY": str(summary), "PR_NUMBER": "7", "GITHUB_REPOSITORY": "me/proj", "GH_TOKEN": "t",
           "GH_LOG": str(log), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    proc = subprocess.run(["bash", str(ROOT / "action" / "comment.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr          # the comment step never fails the job
    calls = log.read_text().splitlines() if log.exists() else []
    body = (tmp_path / "gh.log.body").read_text() if (tmp_path / "gh.log.body").exists() else None
    return proc.stdout, calls, body


def test_pr_comment_is_posted_once_then_updated_in_place(tmp_path):
    _, calls, body = _comment(tmp_path, "## archscan: LEAKS\n")
    assert calls[-1].startswith("api -X POST repos/me/proj/issues/7/comments")
    assert body.startswith("<!-- archscan-report -->\n## archscan: LEAKS")
    _, calls, _ = _comment(tmp_path, "## archscan: PARTIAL\n", EXISTING="991")
    assert calls[-1].startswith("api -X PATCH repos/me/proj/issues/comments/991") and len(calls) == 2


def test_pr_comment_never_fails_the_job_and_cuts_a_huge_report(tmp_path):
    out, calls, _ = _comment(tmp_path, "x", FAIL="1")
    assert "::warning title=archscan::could not comment" in out and len(calls) == 2
    _, _, body = _comment(tmp_path, "y" * 70000)
    assert len(body) < 65536 and "cut at 60000 characters" in body
    out, calls, _ = _comment(tmp_path, "z", PR_NUMBER="")
    assert calls == [] and "not a pull request" in out
