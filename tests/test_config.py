"""[tool.archscan]: discovery (walk up from the working directory), checking, paths relative to the
file, precedence (command line > pyproject > defaults) and `archscan init`."""
from pathlib import Path

import pytest
from archscan_reports import ROOT, cached_scan

from archscan import api
from archscan.cli.main import SCAN_DEFAULTS, build_parser, main, settings
from archscan.config.pyproject import (
    find_pyproject,
    load,
    merge,
    template,
    tomllib,
    write_template,
)
from archscan.errors import InputError

ZOO_ABS = str(ROOT / "examples" / "paper_zoo.py")


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(api, "scan", cached_scan)


def project(tmp_path: Path, table: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "demo"\n\n[tool.archscan]\n{table}\n')
    return tmp_path


def test_discovery_reads_the_nearest_pyproject_only(tmp_path, monkeypatch):
    root = project(tmp_path, 'input-shape = "3,32,32"')
    inner = root / "pkg" / "sub"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    assert find_pyproject() == root / "pyproject.toml"            # walks up to the nearest file
    assert load().values["input_shape"] == "3,32,32"
    (root / "pkg" / "pyproject.toml").write_text('[project]\nname = "inner"\n')
    assert find_pyproject() is None                                # the nearest has no table: none applies


def test_discovery_stops_at_the_repository_root(tmp_path, monkeypatch):
    outer = project(tmp_path, 'input-shape = [1, 2, 3')          # broken, and another project's
    repo = outer / "repo"
    (repo / ".git").mkdir(parents=True)
    monkeypatch.chdir(repo)
    assert find_pyproject() is None and load().values == {}


def test_no_table_anywhere_is_an_empty_config(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "no-table"\n')
    monkeypatch.chdir(tmp_path)
    if find_pyproject(tmp_path.parent) is not None:
        pytest.skip("a [tool.archscan] table above the temporary directory")
    assert find_pyproject() is None and load().path is None and load().values == {}


def test_keys_dash_or_underscore_and_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(project(tmp_path, 'input_shape = [3, 32, 32]\nbatch-size = 4\nfail-on = "leaks"\n'
                                        'model-args = { width = 8 }\nformat = "json:out/r.json"'))
    values = load().values
    assert values == {"input_shape": "3,32,32", "batch_size": 4, "fail_on": "leaks", "model_args": {"width": 8},
                      "format": ["json:out/r.json"]}


@pytest.mark.parametrize("table, needle", [
    ("colour = true", "unknown key 'colour'"),
    ('batch-size = "4"', "batch-size = '4': expected int"),
    ("exit-zero = 1", "expected bool"),
    ("seed = true", "expected int"),
    ('fail-on = "always"', "choose from partial, leaks"),
    ("format = [1, 2]", "list of strings"),
    ("input-shape = ", "not valid TOML"),
])
def test_bad_tables_are_one_line_input_errors(tmp_path, table, needle):
    project(tmp_path, table)
    with pytest.raises(InputError) as info:
        load(tmp_path / "pyproject.toml")
    assert needle in str(info.value) and "pyproject.toml" in str(info.value)


def test_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    root = project(tmp_path, 'model = "models/net.py:build"\nbaseline = "base.json"\nformat = ["text", "sarif:out/a.sarif"]')
    (root / "sub").mkdir()
    monkeypatch.chdir(root / "sub")
    v = load().values
    assert Path(v["model"].rsplit(":", 1)[0]).resolve() == (root / "models" / "net.py").resolve()
    assert Path(v["baseline"]).resolve() == (root / "base.json").resolve()
    assert v["format"][0] == "text" and Path(v["format"][1].split(":", 1)[1]).resolve() == (root / "out" / "a.sarif").resolve()
    monkeypatch.chdir(root)
    assert load().values["model"] == "models/net.py:build"   # spelled as written when run next to the file
    assert load().values["baseline"] == "base.json"


def test_dotted_module_specs_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(project(tmp_path, 'model = "torchvision.models:resnet18"'))
    assert load().values["model"] == "torchvision.models:resnet18"


def test_precedence_cli_over_file_over_defaults(tmp_path, monkeypatch):
    table = (f'model = "{ZOO_ABS}:cnn_c4"\ninput-shape = [3, 32, 32]\nseed = 7\nbatch-size = 2\n'
             'fail-on = "leaks"\nmodel-args = { a = 1, b = 2 }')
    monkeypatch.chdir(project(tmp_path, table))
    args = build_parser().parse_args(["scan", "--seed", "3", "--model-arg", "b=5", "--format", "json"])
    s = settings(args, SCAN_DEFAULTS)
    assert s["seed"] == 3 and s["batch_size"] == 2 and s["labels"] == "inferred"
    assert s["model"].endswith("paper_zoo.py:cnn_c4") and s["fail_on"] == "leaks"
    assert s["model_args"] == {"a": 1, "b": 5} and s["format"] == ["json"]
    assert settings(build_parser().parse_args(["scan", "--no-config"]), SCAN_DEFAULTS)["seed"] == 0


def test_merge_keeps_zero_and_false_from_the_command_line():
    from archscan.config.pyproject import FileConfig
    out = merge({"seed": 0, "quiet": False}, FileConfig(None, {"seed": 9, "quiet": True}), {"seed": 1, "quiet": None})
    assert out["seed"] == 0 and out["quiet"] is False


def test_scan_runs_from_the_table_and_flags_override(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project(tmp_path, f'model = "{ZOO_ABS}:cnn_c4"\ninput-shape = [3, 32, 32]\nfail-on = "leaks"'))
    assert main(["scan"]) == 1                                     # the gate from the table
    assert "FAILED" in capsys.readouterr().out
    assert main(["scan", "--exit-zero"]) == 0                      # a flag overrides
    assert main(["scan", f"{ZOO_ABS}:cnn_narrow"]) == 0               # the positional model overrides
    capsys.readouterr()
    assert main(["scan", "--no-config"]) == 2                      # ignoring the table: no model
    assert "give a MODEL" in capsys.readouterr().err


def test_explicit_config_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "elsewhere").mkdir()
    cfg = project(tmp_path / "elsewhere", f'model = "{ZOO_ABS}:cnn_narrow"\ninput-shape = "3,32,32"')
    monkeypatch.chdir(tmp_path)
    assert main(["scan", "--config", str(cfg / "pyproject.toml"), "--quiet"]) == 0
    assert "RESISTANT" in capsys.readouterr().out
    assert main(["scan", "--config", "missing.toml"]) == 2


def test_config_errors_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project(tmp_path, 'model = "x.py:y"\ncolour = "red"'))
    assert main(["scan"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err


# ---- archscan init -------------------------------------------------------------------------------

def test_template_parses_and_documents_every_key():
    from archscan.config.pyproject import KEYS
    text = template()
    # everything commented out by default but the gate and its fix suggestion: a fresh project fails on
    # a leaking model and says what to change
    assert tomllib.loads(text) == {"tool": {"archscan": {"fail-on": "leaks", "suggest": "on-fail"}}}
    for key in KEYS:
        if key not in ("output", "quiet"):
            assert f"{key.replace('_', '-')} =" in text, key
    filled = tomllib.loads(template("m.py:f", "3,64,64"))["tool"]["archscan"]
    assert filled == {"model": "m.py:f", "input-shape": [3, 64, 64], "fail-on": "leaks", "suggest": "on-fail"}


def test_init_appends_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "demo"\n')
    assert main(["init", "--model", f"{ZOO_ABS}:cnn_c4", "--input-shape", "3,32,32"]) == 0
    data = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert data["project"]["name"] == "demo" and data["tool"]["archscan"]["input-shape"] == [3, 32, 32]
    assert load().values["model"].endswith("paper_zoo.py:cnn_c4")
    assert main(["init"]) == 2 and "already has a [tool.archscan]" in capsys.readouterr().err
    assert main(["scan", "--quiet"]) == 1            # the written table gates as is: cnn_c4 leaks


def test_init_creates_the_file_and_prints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--print"]) == 0 and "[tool.archscan]" in capsys.readouterr().out
    assert not (tmp_path / "pyproject.toml").exists()
    write_template(tmp_path / "pyproject.toml")
    assert tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["archscan"] == {"fail-on": "leaks",
                                                                                      "suggest": "on-fail"}
    assert main(["init", "--input-shape", "3,x,1", "--file", "other.toml"]) == 2


def test_validate_reads_the_table_and_flags_override(tmp_path, monkeypatch, capsys):
    import json
    monkeypatch.chdir(project(tmp_path, f'model = "{ZOO_ABS}:cnn_narrow"\ninput-shape = [3, 32, 32]\nseed = 1\n'))
    assert main(["validate", "--attacks", "prior", "--images", "1", "--local", "off", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["spec"].endswith("paper_zoo.py:cnn_narrow") and report["threat_model"]["seed"] == 1
    assert main(["validate", "--attacks", "prior", "--images", "1", "--local", "off", "--format", "json",
                 "--seed", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["threat_model"]["seed"] == 2
    assert main(["validate", "--no-config", "--attacks", "prior", "--images", "1"]) == 2
