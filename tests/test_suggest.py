"""archscan suggest: each candidate edit is a real rescan of a changed copy of the model; the
smallest that works is named, the gate blames the layers whose change passes it, and the user's
model is never touched."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from archscan.cli import main
from archscan.config import ScanOptions
from archscan.model.load import LoadedModel
from archscan.pipeline import scan_loaded
from archscan.report.gate import Policy, evaluate
from archscan.suggest import suggest
from archscan.suggest.adapt import fit_downstream
from archscan.suggest.candidates import candidates
from archscan.suggest.edits import Edit, apply

SHAPE = (3, 8, 8)
MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def leaky():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))

    def residual():
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 3, 3, padding=1)
                self.act = nn.Softplus()
                self.fc = nn.Linear(3 * 8 * 8, 3)

            def forward(self, x):
                return self.fc(torch.flatten(self.act(self.conv(x)) + x, 1))
        return Block()
''')


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 6, 3, padding=1), nn.Softplus(),
                         nn.Flatten(), nn.Linear(6 * 8 * 8, 3))


def loaded(module: nn.Module) -> LoadedModel:
    return LoadedModel(module, None, "test:net", None)


@pytest.fixture(scope="module")
def leaky_report():
    model, opts = net(), ScanOptions(input_shape=SHAPE)
    return model, opts, scan_loaded(loaded(model), opts)


def test_halving_filters_refits_the_next_layers_with_their_leading_slice():
    model = net()
    edit = Edit("filters", "0: 2 filters", 4.0, target="0", layers=("0",))
    edited, _ = apply(edit, model, ScanOptions(input_shape=SHAPE))
    fit_downstream(edited, SHAPE, seed=0)
    assert edited[0].out_channels == 2 and edited[2].in_channels == 2
    assert torch.equal(edited[2].weight, model[2].weight[:, :2])
    assert edited(torch.zeros(1, *SHAPE)).shape == (1, 3)


def test_stride_refits_the_linear_head_and_leaves_the_original_alone():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    edited, _ = apply(Edit("stride", "2: stride 2", 3.0, target="2"), model, ScanOptions(input_shape=SHAPE))
    fit_downstream(edited, SHAPE, seed=0)
    assert edited[5].in_features == 6 * 4 * 4
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model[2].stride == (1, 1) and model[5].in_features == 6 * 8 * 8


def test_candidates_cover_bias_activation_convs_and_settings(leaky_report):
    model, opts, report = leaky_report
    edits = candidates(report, model, opts)
    kinds = {e.kind for e in edits}
    assert {"no-bias", "activation", "stride", "pool", "filters", "batch-size"} <= kinds
    assert [e.cost for e in edits] == sorted(e.cost for e in edits)
    act = next(e for e in edits if e.kind == "activation")
    assert len(act.layers) == 2 and act.value == "Softplus"


def test_the_best_edit_is_a_real_rescan_and_the_gate_blames_its_layers(leaky_report):
    model, opts, report = leaky_report
    policy = Policy(fail_on="leaks")
    assert report.scores.verdict == "LEAKS"
    found = suggest(loaded(model), report, opts, policy, first_only=True)
    best = found.best
    assert best is not None and best.works and best.gate_passed and found.outcomes[-1] is best
    assert all(not o.works for o in found.outcomes[:-1])
    edited, edited_opts = apply(best.edit, model, opts)
    if best.edit.architecture:
        fit_downstream(edited, SHAPE, opts.seed)
    again = scan_loaded(loaded(edited), edited_opts)
    assert again.scores.verdict == best.verdict and again.scores.leakage_score == best.leakage_score
    assert evaluate(again, policy).passed
    with_fix = report.with_(suggestions=found)
    result = evaluate(with_fix, policy)
    assert not result.passed and result.responsible_layers() == list(best.edit.layers)
    assert "measured fix: " + best.edit.change in result.failed[0].message


def test_same_seed_same_suggestions(leaky_report):
    model, opts, report = leaky_report
    one = suggest(loaded(model), report, opts, Policy(fail_on="leaks"), first_only=True).to_dict()
    two = suggest(loaded(model), report, opts, Policy(fail_on="leaks"), first_only=True).to_dict()
    one.pop("seconds"), two.pop("seconds")
    assert one == two


def test_nothing_to_change_when_the_gate_passes(leaky_report):
    model, opts, report = leaky_report
    found = suggest(loaded(model), report, opts, Policy(fail_under=0.0))
    assert found.outcomes == () and found.best is None and found.complete


def test_cli_scan_suggest_on_fail_and_suggest_command(tmp_path, capsys):
    src = tmp_path / "models.py"
    src.write_text(MODEL)
    text = src.read_text()
    args = [f"{src}:leaky", "--input-shape", "3,8,8", "--no-config", "--fail-on", "leaks"]
    assert main(["scan", *args, "--suggest", "on-fail", "--color", "never"]) == 1
    out = capsys.readouterr().out
    assert "suggested fix" in out and "measured fix: " in out
    assert main(["suggest", *args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    s = report["suggestions"]
    assert s["complete"] and s["tried"] == len(s["outcomes"]) > 3 and s["best"]
    assert report["gate"]["responsible_layers"]
    assert src.read_text() == text                      # the user's file is never modified
    assert main(["scan", *args, "--format", "json"]) == 1    # default: no suggestions
    assert "suggestions" not in json.loads(capsys.readouterr().out)


def test_an_edit_the_model_cannot_take_is_recorded_not_raised(tmp_path):
    src = tmp_path / "models.py"
    src.write_text(MODEL)
    from archscan.pipeline import load
    opts = ScanOptions(input_shape=SHAPE)
    model = load(f"{src}:residual", opts)
    report = scan_loaded(model, opts)
    found = suggest(model, report, opts)
    broken = [o for o in found.outcomes if o.edit.kind in ("stride", "pool")]   # the skip sum no longer adds up
    assert broken and all(o.error and o.verdict is None and not o.works for o in broken)


def test_the_library_verb(tmp_path):
    from archscan import api
    src = tmp_path / "models.py"
    src.write_text(MODEL)
    report = api.suggest(f"{src}:leaky", ScanOptions(input_shape=SHAPE), fail_on="leaks")
    s = report.suggestions
    assert s.target == "gate" and s.complete and s.best
    assert not report.gate.passed and report.gate.responsible_layers()
    assert report.to_dict()["suggestions"]["best"] == s.best.edit.id
