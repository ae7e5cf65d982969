"""The safe .pt2 loader: legitimate archives load exactly like torch.export.load; crafted ones
are refused with a precise one-line message and never run their payload, at the API and at the CLI.

Tests marked ``demo`` load the same crafted files with plain ``torch.export.load`` and show that
the payload DOES run there (it only creates a marker file under pytest's tmp_path), so the
refusal tests prove something.  Deselect them with ``-m "not demo"``.  The crafted archives are
built in tests/pt2_crafting.py, the legitimate ones in tests/pt2_models.py.
"""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from pt2_crafting import (  # noqa: F401 (fixtures)
    CASES,
    SystemPayload,
    build_legacy_zip,
    build_sample_inputs,
    evil_module,
    marker,
    rewrite,
    torch_bytes,
)
from pt2_models import (
    LEGIT,
    legit,  # noqa: F401 (a fixture)
)
from torch import nn

import archscan.model.load as model_load
from archscan.cli.main import main
from archscan.model.pt2 import (
    Pt2ArchiveError,
    Pt2LoadError,
    UnsafeArchiveError,
    inspect_archive,
    load_program_safely,
    torch_load_guard,
)
from archscan.model.pt2.errors import Refusal
from archscan.model.pt2.guard import ORIGINAL_TORCH_LOAD
from archscan.model.pt2.load import torch_load


def _targets(ep):
    out = []
    for gm in ep.graph_module.modules():
        if isinstance(gm, torch.fx.GraphModule):
            out.extend((n.op, str(n.target)) for n in gm.graph.nodes)
    return out


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_legit_archive_loads_like_torch(legit, name, capfd):
    path, args, kwargs = legit[name]
    capfd.readouterr()
    ep = load_program_safely(str(path))
    captured = capfd.readouterr()
    assert captured.err == ""
    ref = torch.export.load(str(path))
    assert _targets(ep) == _targets(ref)
    assert ep.graph_signature.input_specs == ref.graph_signature.input_specs
    assert ep.state_dict.keys() == ref.state_dict.keys()
    for k in ref.state_dict:
        assert torch.equal(ep.state_dict[k], ref.state_dict[k])
    assert ep.constants.keys() == ref.constants.keys()
    assert ep._guards_code == ref._guards_code
    torch.testing.assert_close(ep.module()(*args, **kwargs), ref.module()(*args, **kwargs))


def test_legit_inspection_report(legit):
    report = inspect_archive(str(legit["conv"][0]))
    assert report.models == ["model"]
    assert "torch.ops.aten.relu_.default" in report.targets["model"]
    assert "torch.ops.aten.conv2d.default" in report.targets["model"]
    assert report.total_bytes == sum(report.entries.values())


def test_legit_inplace_relu_and_batchnorm_targets(legit):
    assert "torch.ops.aten.relu_.default" in inspect_archive(str(legit["conv"][0])).targets["model"]
    t = inspect_archive(str(legit["resblock_train"][0])).targets["model"]
    assert "torch.ops.aten.batch_norm.default" in t
    t = inspect_archive(str(legit["cond"][0])).targets["model"]
    assert "torch.ops.higher_order.cond" in t


def test_guard_restores_everything():
    import sympy
    from torch.export.pt2_archive import _package
    before = (torch.load, torch.serialization.load, torch._C._pickle_load_obj, _package.pickle,
              _package._load_aoti, sympy.sympify, torch.fx.Graph.python_code,
              set(torch.serialization.get_safe_globals()))
    with torch_load_guard():
        assert torch.load is not before[0]
    after = (torch.load, torch.serialization.load, torch._C._pickle_load_obj, _package.pickle,
             _package._load_aoti, sympy.sympify, torch.fx.Graph.python_code,
             set(torch.serialization.get_safe_globals()))
    assert before == after


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_archive_is_refused_without_running_payload(case, legit, tmp_path, marker,
                                                            evil_module, capfd):
    builder, entry, reason, _demo = CASES[case]
    path = builder(legit, tmp_path, marker, evil_module)
    capfd.readouterr()
    with pytest.raises(UnsafeArchiveError) as info:
        load_program_safely(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: refused: {entry} "), msg
    assert reason in msg, msg
    assert "\n" not in msg
    assert info.value.entry == entry
    assert not marker.exists(), "payload ran"
    assert evil_module not in sys.modules
    assert capfd.readouterr().err == ""


@pytest.mark.demo
@pytest.mark.parametrize("case", sorted(c for c, v in CASES.items() if v[3]))
def test_demo_plain_torch_export_load_runs_payload(case, legit, tmp_path, marker, evil_module,
                                                   monkeypatch):
    """The same files DO execute their payload (or reach native code) with plain torch."""
    builder, _entry, _reason, demo = CASES[case]
    path = builder(legit, tmp_path, marker, evil_module)
    if demo == "aoti":
        from torch.export.pt2_archive import _package
        calls = []

        def spy(file, model_name, *a, **k):
            calls.append(model_name)
            raise RuntimeError("spy: torch was about to dlopen the AOTInductor library")
        monkeypatch.setattr(_package, "_load_aoti", spy)
        with pytest.raises(RuntimeError):
            torch.export.load(str(path))
        assert calls == ["model"]
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ep = torch.export.load(str(path))
            if demo == "run":
                ep.module()(torch.randn(2, 3))
        except Exception:
            pass  # many crafted files fail *after* the payload already ran
    assert marker.exists(), "expected plain torch.export.load to run the payload"


@pytest.mark.demo
def test_demo_torch_resolves_torch_os_system_to_os_system():
    """torch's deserializer turns the string into os.system; only its verifier stops it."""
    from torch._export.serde.serialize import GraphModuleDeserializer
    assert GraphModuleDeserializer().deserialize_operator("torch.os.system") is os.system


# ---------------------------------------------------------------------------------------------
# Belt and braces: the runtime guard alone (no pre-inspection) still stops the payloads.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["a_weight_use_pickle", "b_constant_use_pickle",
                                  "c1_opaque_object", "c2_custom_object", "d_example_inputs",
                                  "g_aotinductor", "j_sympy_eval", "k_fx_name_injection"])
def test_runtime_guard_alone_blocks_payload(case, legit, tmp_path, marker, evil_module, capfd):
    builder = CASES[case][0]
    path = builder(legit, tmp_path, marker, evil_module)
    capfd.readouterr()
    sink: list[str] = []
    with open(path, "rb") as fh, torch_load_guard(sink) as guard:
        try:
            torch_load(fh, guard)
        except Exception:
            pass
    assert guard.refusals, f"guard did not trip; torch said: {sink[-3:]}"
    assert not marker.exists()
    assert capfd.readouterr().err == ""


def test_runtime_guard_blocks_legacy_fallback_of_torch_export_load(legit, tmp_path, marker,
                                                                   capfd):
    path = build_legacy_zip(legit, tmp_path, marker, None)
    capfd.readouterr()
    with torch_load_guard() as guard:
        with pytest.raises(Refusal):
            torch.export.load(str(path))
    assert guard.refusals and "legacy" in guard.refusals[0].reason
    assert not marker.exists()
    assert capfd.readouterr().err == ""


def test_runtime_guard_weights_only_none_becomes_true(tmp_path, marker):
    blob = torch_bytes(SystemPayload(marker))
    with torch_load_guard() as guard:
        with pytest.raises(pickle.UnpicklingError):
            torch.load(io.BytesIO(blob))            # default weights_only -> forced True
        with pytest.raises(Refusal):
            torch.load(io.BytesIO(blob), weights_only=False)
    assert len(guard.refusals) == 1
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Other behaviour
# ---------------------------------------------------------------------------------------------


def test_torch_failure_after_checks_is_one_line_load_error(legit, tmp_path, capfd):
    def edit(doc):
        doc["schema_version"]["major"] = 99
    p = rewrite(legit["conv"][0], tmp_path / "future.pt2", edit_json={"models/model.json": edit})
    capfd.readouterr()
    with pytest.raises(Pt2LoadError) as info:
        load_program_safely(str(p))
    msg = str(info.value)
    assert msg.startswith(f"{p}: torch.export could not load it: ") and "\n" not in msg
    assert not isinstance(info.value, UnsafeArchiveError)
    assert isinstance(info.value, Pt2ArchiveError) and isinstance(info.value, ValueError)
    assert capfd.readouterr().err == ""
    assert torch.load is ORIGINAL_TORCH_LOAD


@pytest.mark.parametrize("case", ["a_weight_use_pickle", "d_example_inputs"])
def test_force_no_weights_only_env_does_not_weaken(case, legit, tmp_path, marker, evil_module,
                                                    monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = CASES[case][0](legit, tmp_path, marker, evil_module)
    with pytest.raises(UnsafeArchiveError):
        load_program_safely(str(path))
    with open(path, "rb") as fh, torch_load_guard() as guard:
        try:
            torch_load(fh, guard)
        except Exception:
            pass
    assert guard.refusals
    assert not marker.exists()


def test_log_receives_torch_output_on_refusal_inside_torch(legit, tmp_path, marker, evil_module):
    path = build_sample_inputs(legit, tmp_path, marker, evil_module)
    sink: list[str] = []
    with open(path, "rb") as fh, torch_load_guard(sink) as guard:
        try:
            torch_load(fh, guard)
        except Exception:
            pass
    assert "weights_only=False" in guard.refusals[0].reason
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# The CLI: `archscan scan crafted.pt2` is one line and exit 2; a real .pt2 scans as before
# ---------------------------------------------------------------------------------------------


def _scan(capfd, *argv):
    """main() on argv; (exit code, stdout, stderr), the file descriptors included."""
    capfd.readouterr()
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_refuses_crafted_pt2_in_one_line(case, legit, tmp_path, marker, evil_module, capfd):
    builder, entry, reason, _demo = CASES[case]
    path = builder(legit, tmp_path, marker, evil_module)
    code, out, err = _scan(capfd, "scan", str(path))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"archscan: error: {path}: refused: {entry} "), lines[0]
    assert reason in lines[0]
    assert not marker.exists(), "payload ran"
    assert evil_module not in sys.modules


@pytest.mark.slow   # a fresh interpreter importing torch: seconds, more on a loaded machine
def test_cli_subprocess_exit_2_and_no_payload(legit, tmp_path, marker):
    """The real process: exit status 2, one line on stderr, and os.system was never reached."""
    path = CASES["a_weight_use_pickle"][0](legit, tmp_path, marker, None)
    proc = subprocess.run([sys.executable, "-m", "archscan", "scan", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"archscan: error: {path}: refused: data/weights/model_weights_config.json marks "
        "'fc.weight' use_pickle (a pickled object, which would run code on load)"]
    assert not marker.exists()


def test_cli_size_cap_from_environment(legit, monkeypatch, capfd):
    path = legit["conv"][0]
    monkeypatch.setenv("ARCHSCAN_MAX_PT2_BYTES", "1000")
    code, _, err = _scan(capfd, "scan", str(path))
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{path}: refused: " in err and "1000-byte cap" in err
    monkeypatch.setenv("ARCHSCAN_MAX_PT2_BYTES", "lots")
    code, _, err = _scan(capfd, "scan", str(path))
    assert code == 2
    assert err.splitlines() == ["archscan: error: ARCHSCAN_MAX_PT2_BYTES='lots': expected a "
                                "positive number of bytes"]


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.act(self.conv2(self.act(self.conv1(x)))), 1))


def test_cli_legit_pt2_scans_as_with_torch_export_load(tmp_path, capfd, monkeypatch):
    path = tmp_path / "small.pt2"
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), str(path))
    code, safe_out, err = _scan(capfd, "scan", str(path))
    assert code == 0 and err == "", err
    rows = [line.split() for line in safe_out.splitlines()
            if len(line.split()) > 1 and line.split()[1] in ("Conv2d", "Linear")]
    assert [r[1] for r in rows] == ["Conv2d"] * 2 + ["Linear"]   # the module classes, as fx names them
    # the same scan through plain torch.export.load, the loader archscan used before
    monkeypatch.setattr(model_load, "load_program_safely",
                        lambda spec, max_bytes=None: torch.export.load(spec))
    code, plain_out, err = _scan(capfd, "scan", str(path))
    assert code == 0, err
    assert safe_out == plain_out


def test_cli_unforeseen_loader_error_is_still_one_line(legit, monkeypatch, capfd):
    """A check tripping over input it did not foresee is bad input (exit 2), not a traceback."""
    def broken(spec, max_bytes=None):
        raise TypeError("'int' object is not iterable")
    monkeypatch.setattr(model_load, "load_program_safely", broken)
    path = legit["conv"][0]
    code, _, err = _scan(capfd, "scan", str(path))
    assert code == 2
    assert err.splitlines() == [f"archscan: error: {path}: not a readable torch.export program "
                                "(TypeError: 'int' object is not iterable)"]
