"""Every output format over the same report: golden files (text, JSON, SARIF, JUnit, Markdown;
ARCHSCAN_REGEN_GOLDEN=1 rewrites them), the SARIF rules GitHub enforces, JUnit parsed back, the
self-contained HTML (screenshotted in headless Chromium when installed), multi-format output,
terminal colour, quiet mode and the progress bar."""
import base64
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from archscan_reports import ROOT, ZOO, cached_scan, check_golden, normalise, zoo_report

from archscan import api
from archscan.cli.main import main
from archscan.cli.progress import Progress, wanted
from archscan.formatters import FORMATTERS, render
from archscan.formatters.html import grid_bytes
from archscan.report.catalogue import RULES
from archscan.report.gate import Policy, evaluate
from archscan.report.records import ScanReport

GOLDEN_FORMATS = {"text": "txt", "json": "json", "sarif": "sarif", "junit": "junit.xml", "markdown": "md"}
# the ids GitHub keys alerts on: never renumbered (append new ones, never reuse)
STABLE_IDS = {"AS001": "image-determined", "AS002": "layer-leaks-input", "AS003": "layer-input-determined",
              "AS004": "activation-gradient-exposed", "AS005": "optimisation-recoverable", "AS010": "layer-input-partial",
              "AS020": "batch-exceeds-separable", "AS030": "chain-only-verdict", "AS031": "optimisation-view-not-run", "AS100": "unsupported-op", "AS101": "rank-bounded",
              "AS102": "ambiguous-activation", "AS200": "gate-fail-under", "AS201": "gate-fail-on",
              "AS202": "gate-baseline-regression"}


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("COLUMNS", raising=False)   # the text goldens are drawn at the default width
    monkeypatch.setattr(api, "scan", cached_scan)


def scenario(name: str) -> ScanReport:
    """leaks: cnn_c4 failing --fail-on leaks; resistant: cnn_narrow passing --fail-under 0.5."""
    if name == "leaks":
        report, policy = zoo_report("cnn_c4"), Policy(fail_on="leaks")
    else:
        report, policy = zoo_report("cnn_narrow"), Policy(fail_under=0.5, fail_on="partial")
    report = normalise(report)
    return report.with_(gate=evaluate(report, policy))


def rendered(report, fmt: str) -> str:
    buf = io.StringIO()
    render(report, fmt, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def reports():
    return {name: scenario(name) for name in ("leaks", "resistant")}


@pytest.mark.parametrize("fmt", sorted(GOLDEN_FORMATS))
@pytest.mark.parametrize("name", ["leaks", "resistant"])
def test_golden(reports, name, fmt):
    check_golden(f"{name}.{GOLDEN_FORMATS[fmt]}", rendered(reports[name], fmt))


def test_golden_comparison_tolerates_only_last_digit_rounding():
    from archscan_reports import same_up_to_rounding
    golden = '"leakage_score": 0.130288, "verdict": "RESISTANT", "id": "10a2a5"'
    assert same_up_to_rounding(golden.replace("0.130288", "0.130265"), golden)
    assert not same_up_to_rounding(golden.replace("0.130288", "0.1325"), golden)       # 1.7 %: a real change
    assert not same_up_to_rounding(golden.replace("RESISTANT", "PARTIAL"), golden)
    assert not same_up_to_rounding(golden.replace("10a2a5", "10a2a6"), golden)


def test_every_format_is_registered():
    assert set(FORMATTERS) == {"text", "json", "sarif", "junit", "markdown", "html", "github", "gitlab"}


# ---- SARIF ---------------------------------------------------------------------------------------

def check_sarif_for_github(log: dict) -> None:
    """What GitHub code scanning enforces or needs to show an alert at a line."""
    assert log["version"] == "2.1.0" and "sarif" in log["$schema"]
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert run["tool"]["driver"]["name"] == "archscan"
    for r in rules:
        assert re.fullmatch(r"AS\d{3}", r["id"]) and r["shortDescription"]["text"] and r["fullDescription"]["text"]
        assert "security" in r["properties"]["tags"]
        assert 0.0 <= float(r["properties"]["security-severity"]) <= 10.0
        assert r["defaultConfiguration"]["level"] in ("error", "warning", "note")
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["message"]["text"] and res["level"] in ("error", "warning", "note")
        assert len(res["locations"]) >= 1
        phys = res["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"]["uri"], res
        assert phys["region"]["startLine"] >= 1
        assert res["partialFingerprints"]
        for rel in res.get("relatedLocations", []):
            assert rel["physicalLocation"]["artifactLocation"]["uri"]


@pytest.mark.parametrize("name", ["leaks", "resistant"])
def test_sarif_is_what_github_accepts(reports, name):
    log = json.loads(rendered(reports[name], "sarif"))
    check_sarif_for_github(log)
    results = log["runs"][0]["results"]
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "examples/paper_zoo.py"
               for r in results)
    if name == "leaks":
        gate = [r for r in results if r["ruleId"] == "AS201"]
        assert len(gate) == 1 and gate[0]["level"] == "error"
        assert gate[0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 116
        assert [x["logicalLocations"][0]["name"] for x in gate[0]["relatedLocations"]] == ["conv2", "conv3", "conv4", "fc"]


def test_sarif_rule_ids_are_stable(reports):
    rules = json.loads(rendered(reports["leaks"], "sarif"))["runs"][0]["tool"]["driver"]["rules"]
    assert {r["id"]: r["name"] for r in rules} == STABLE_IDS
    assert {k: v.name for k, v in RULES.items()} == STABLE_IDS
    # fingerprints do not depend on the line: moving the model down a line keeps every alert
    moved = ScanReport.from_dict(json.loads(json.dumps(reports["leaks"].to_dict()).replace("paper_zoo.py:11",
                                                                                             "paper_zoo.py:21")))
    moved = moved.with_(gate=reports["leaks"].gate)
    fp = lambda rep: [r["partialFingerprints"] for r in json.loads(rendered(rep, "sarif"))["runs"][0]["results"]]
    assert fp(moved) == fp(reports["leaks"])


def test_every_emitted_rule_id_is_catalogued():
    emitted = set()
    for path in (ROOT / "archscan").rglob("*.py"):
        if path.name != "catalogue.py":
            emitted |= set(re.findall(r"[\"'](AS\d{3})[\"']", path.read_text()))
    assert emitted and emitted <= set(RULES), emitted - set(RULES)


def test_sarif_for_a_pt2_program_is_located_at_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, 1, 8, 8),)), "m.pt2")
    assert main(["scan", "m.pt2", "--format", "sarif:out.sarif", "--format", "junit:out.xml"]) == 0, capsys.readouterr().err
    log = json.loads((tmp_path / "out.sarif").read_text())
    check_sarif_for_github(log)
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert len(uris) == 1 and uris.pop().endswith("m.pt2")
    ET.parse(tmp_path / "out.xml")


# ---- JUnit ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["leaks", "resistant"])
def test_junit_parses_back(reports, name):
    root = ET.fromstring(rendered(reports[name], "junit"))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    checks = [c for c in cases if c.get("classname") == "archscan.gate"]
    layers = [c for c in cases if c.get("classname") == "archscan.layers"]
    assert len(checks) == len(reports[name].gate.checks) and len(layers) == len(reports[name].layers)
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("tests")) == len(cases) and int(suite.get("failures")) == len(failed)
    assert root.get("failures") == suite.get("failures")
    blamed = {c.get("name").split()[0] for c in layers if c.find("failure") is not None}
    assert blamed == set(reports[name].gate.responsible_layers())
    assert all(c.get("file") == "examples/paper_zoo.py" and c.get("line").isdigit() for c in layers)
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["verdict"] == reports[name].scores.verdict


# ---- HTML ----------------------------------------------------------------------------------------

def _png(tmp_path) -> Path:
    from skimage.io import imsave
    path = tmp_path / "grid.png"
    imsave(path, (np.indices((40, 60)).sum(0) % 2 * 255).astype(np.uint8), check_contrast=False)
    return path


def test_html_is_self_contained_with_plots_and_grid(reports, tmp_path):
    page = rendered(reports["leaks"], "html")
    assert page.startswith("<!DOCTYPE html>") and "conv1" in page and "FAIL" in page
    assert not re.search(r"(src|href)=['\"](https?:|//)", page)
    assert page.count("data:image/png;base64,") == 2
    with_grid = reports["leaks"].with_(validation={"grid_png": str(_png(tmp_path)), "best_psnr": 31.2})
    page = rendered(with_grid, "html")
    assert page.count("data:image/png;base64,") == 3 and "31.2 dB" in page


def test_grid_accepts_path_base64_and_data_uri(tmp_path):
    raw = _png(tmp_path).read_bytes()
    b64 = base64.b64encode(raw).decode()
    assert grid_bytes(str(tmp_path / "grid.png")) == raw == grid_bytes(b64) == grid_bytes("data:image/png;base64," + b64)
    assert grid_bytes("not/a/file.png") is None and grid_bytes(None) is None


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_html_screenshot_in_headless_chromium(reports, tmp_path):
    from skimage.io import imread
    page = tmp_path / "report.html"
    page.write_text(rendered(reports["leaks"].with_(validation={"grid_png": str(_png(tmp_path))}), "html"))
    shot = tmp_path / "shot.png"
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2600",
                           f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    img = imread(shot)[..., :3].astype(float)
    assert img.shape[0] >= 2000 and img.shape[1] == 1280
    # the plots drew coloured bars: some clearly saturated pixels, not only text on white
    saturation = img.max(axis=2) - img.min(axis=2)
    assert (saturation > 100).mean() > 0.005


# ---- CLI outputs, text modes, progress -----------------------------------------------------------

def test_several_formats_in_one_run(tmp_path, capsys):
    args = ["scan", f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--fail-on", "leaks", "--quiet"]
    outs = {fmt: tmp_path / f"r.{fmt}" for fmt in ("json", "sarif", "junit", "markdown", "html")}
    code = main(args + [a for fmt, p in outs.items() for a in ("--format", f"{fmt}:{p}")] + ["--format", "text"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[1].startswith("verdict    LEAKS") and "layer  type" not in out  # --quiet text
    assert all(p.stat().st_size > 200 for p in outs.values())
    assert json.loads(outs["json"].read_text())["gate"]["passed"] is False


@pytest.mark.parametrize("formats, needle", [
    (["--format", "json", "--format", "text"], "only one format can go to standard output"),
    (["--format", "yaml"], "FORMAT one of"),
])
def test_bad_format_arguments_exit_2(capsys, formats, needle):
    code = main(["scan", f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", *formats])
    assert code == 2 and needle in capsys.readouterr().err


def test_format_with_output_file(tmp_path, capsys):
    target = tmp_path / "r.sarif"
    assert main(["scan", f"{ZOO}:cnn_c4", "--input-shape", "3,32,32", "--format", "sarif", "-o", str(target)]) == 0
    check_sarif_for_github(json.loads(target.read_text()))


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_text_colour_only_on_a_terminal(reports, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    tty = FakeTTY()
    render(reports["leaks"], "text", tty)
    assert "\033[" in tty.getvalue() and "\033[" not in rendered(reports["leaks"], "text")
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FakeTTY()
    render(reports["leaks"], "text", tty)
    assert "\033[" not in tty.getvalue()


def test_progress_only_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("ARCHSCAN_NO_PROGRESS", raising=False)
    assert not wanted(io.StringIO()) and wanted(FakeTTY()) and not wanted(FakeTTY(), quiet=True)
    tty = FakeTTY()
    with Progress("models", total=2, stream=tty) as bar:
        bar.update(1, "scanning b")
        import time
        time.sleep(0.35)
    out = tty.getvalue()
    assert "[############............] 1/2 scanning b" in out and out.endswith("\r\033[K")
    silent = io.StringIO()
    with Progress("x", stream=silent, enabled=False):
        pass
    assert silent.getvalue() == ""


# ---- colour ----------------------------------------------------------------------------------------

class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("env, choice, tty, expected", [
    ({}, "auto", True, True), ({}, "auto", False, False),
    ({"NO_COLOR": "1"}, "auto", True, False), ({"NO_COLOR": ""}, "auto", True, True),
    ({"FORCE_COLOR": "1"}, "auto", False, True), ({"FORCE_COLOR": "0"}, "auto", False, False),
    ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, "auto", True, False),
    ({"NO_COLOR": "1"}, "always", False, True), ({"FORCE_COLOR": "1"}, "never", True, False),
    ({"TERM": "dumb"}, "auto", True, False),
])
def test_colour_choice_env_and_terminal(monkeypatch, env, choice, tty, expected):
    from archscan.formatters.text import supports_colour
    for k in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert supports_colour(_Tty() if tty else io.StringIO(), choice) is expected


def test_color_never_writes_no_escape_codes_and_always_does(reports, capsys):
    from archscan.formatters.outputs import Output, write_outputs
    write_outputs(reports["leaks"], [Output("text", None)], colour="always")
    assert "\033[" in capsys.readouterr().out
    write_outputs(reports["leaks"], [Output("text", None)], colour="never")
    assert "\033[" not in capsys.readouterr().out
