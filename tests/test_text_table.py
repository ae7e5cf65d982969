"""The text tables fit the width (scan's layer table, compare's, validate's): columns hidden in a fixed
order and named under the table, the layer, rank, deficiency and status never hidden or cut, rows
nested by module path, kernel/stride/params and a totals row; colour only when asked for."""
from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
from archscan_reports import ROOT, cached_scan

from archscan import api
from archscan.cli.main import main
from archscan.config import ScanOptions
from archscan.formatters import render, tables, text
from archscan.formatters.comparison import render_text as compare_text
from archscan.report.compare import comparison

WIDTHS = (60, 80, 120, 200)
KEPT = ("layer", "rank", "defic.", "status")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(api, "scan", cached_scan)
    for k in ("COLUMNS", "NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(k, raising=False)


def _report(spec: str):
    return cached_scan(spec, ScanOptions(input_shape=(3, 32, 32), local="off"))


@pytest.fixture(scope="module")
def reports():
    """cnn_c4 (flat, a leaking conv stack) and resnet_tiny (nested: layer1.0.conv1, layer2.0.downsample.0)."""
    return {"cnn_c4": _report("examples/paper_zoo.py:cnn_c4"), "resnet_tiny": _report("examples/resnet.py:resnet_tiny")}


def _json(report) -> dict:
    buf = io.StringIO()
    render(report, "json", buf)
    return json.loads(buf.getvalue())


def _table_part(lines: list[str]) -> tuple[list[str], list[str]]:
    """(table lines up to the totals, the hidden-columns note) of ``text.table``'s output."""
    note = next((i for i, l in enumerate(lines) if l.startswith("hidden for width:")), len(lines))
    return lines[:note], lines[note:]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["cnn_c4", "resnet_tiny"])
def test_table_fits_the_width_and_keeps_the_important_columns(reports, name, width):
    report = reports[name]
    lines = text.table(report, width=width)
    assert all(len(l) <= width for l in lines), max(lines, key=len)
    assert not any("…" in l or "..." in l for l in lines)
    header = lines[0].split("  ")
    assert all(k in [h.strip() for h in header] for k in KEPT)
    body, _ = _table_part(lines)
    tree = text.nested(report.layers)
    for row, (depth, label, layer) in zip(body[2:], tree):   # one line a row: nothing wrapped at these widths
        assert row.startswith(text.INDENT * depth + label)
        if layer is not None:                                 # the kept cells whole, in their column
            assert re.search(rf"\s{re.escape(text._rank(layer))}\s+{layer.deficiency}\s", row)
            assert row.split()[-1] == layer.status
    assert body[2 + len(tree)].startswith("---") and body[3 + len(tree)].startswith("total")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["cnn_c4", "resnet_tiny"])
def test_hidden_columns_are_named_exactly_when_dropped(reports, name, width):
    report = reports[name]
    lines = text.table(report, width=width)
    full = tables.natural_width(list(text.LAYER_COLUMNS), text.rows(report))
    _, note = _table_part(lines)
    assert bool(note) == (full > width)
    shown = {h.strip() for h in re.split(r"\s{2,}", lines[0].strip())}
    hidden = {c.header for c in text.LAYER_COLUMNS} - shown
    assert bool(hidden) == bool(note)
    said = " ".join(note)
    assert all(h in said for h in hidden) and (not note or f"COLUMNS={full}" in said)
    if width == 200:
        assert not note and "rows W/K/P" in lines[0] and "kernel" in lines[0]


def test_drop_order_is_lowest_priority_first(reports):
    order = [c.header for c in sorted((c for c in text.LAYER_COLUMNS if c.drop), key=lambda c: c.drop)]
    assert order[:2] == ["rows W/K/P", "in -> out"]
    assert {c.header for c in text.LAYER_COLUMNS if not c.drop} == set(KEPT)
    every = {c.header for c in text.LAYER_COLUMNS}
    for report in reports.values():
        for width in (200, 120, 100, 80, 60, 40):     # what is hidden is always the first few of the order
            shown = set(re.split(r"\s{2,}", text.table(report, width=width)[0].strip()))
            hidden = every - shown
            assert hidden == set(order[:len(hidden)])


def test_totals_are_the_sums_of_the_json_report(reports):
    for report in reports.values():
        data = _json(report)
        lines = text.table(report, width=200)
        total = next(l for l in lines if l.startswith("total"))
        params = sum(l["params"] for l in data["layers"])
        assert f"{params:,}" in total.split()
        counts = {}
        for l in data["layers"]:
            counts[l["status"]] = counts.get(l["status"], 0) + 1
        tail = lines[lines.index(total):]
        for status, n in counts.items():
            assert any(l.split()[-2:] == [str(n), status] for l in tail)


def test_layer_records_carry_kernel_stride_and_params(reports):
    layers = {l["name"]: l for l in _json(reports["resnet_tiny"])["layers"]}
    down = layers["layer2.0.downsample.0"]
    assert down["kernel"] == [1, 1] and down["stride"] == [2, 2] and down["params"] == 8 * 16
    assert layers["fc"]["kernel"] is None and layers["fc"]["stride"] is None and layers["fc"]["params"] == 16 * 10 + 10
    row = next(l for l in text.table(reports["resnet_tiny"], width=200) if l.startswith("      0 "))
    assert row.split()[1:5] == ["Conv2d", "1x1", "2", "8x32x32"]


def test_rows_nest_by_module_path(reports):
    lines = text.table(reports["resnet_tiny"], width=200)
    names = [re.match(r"\s*\S*", l).group() for l in lines[2:]]   # the layer cell, with its indent
    at = names.index("layer2")
    assert names[at:at + 6] == ["layer2", "  0", "    conv1", "    downsample", "      0", "    conv2"]
    assert names[names.index("layer1"):names.index("layer1") + 4] == ["layer1", "  0", "    conv1", "    conv2"]
    assert names[0] == "conv1" and "fc" in names
    # a module left and re-entered opens its group again; a functional layer named by its module is a row
    flat = [SimpleNamespace(name=n) for n in ("a.x", "b", "a.y", "c", "c.z")]
    assert [(d, label) for d, label, _ in text.nested(flat)] == [
        (0, "a"), (1, "x"), (0, "b"), (0, "a"), (1, "y"), (0, "c"), (1, "z")]


def test_no_escape_codes_without_colour_and_some_with(reports, capsys):
    report = reports["cnn_c4"]
    plain, coloured = io.StringIO(), io.StringIO()
    render(report, "text", plain, colour="never")
    render(report, "text", coloured, colour="always")
    assert "\x1b" not in plain.getvalue() and "\x1b[" in coloured.getvalue()
    assert ANSI.sub("", coloured.getvalue()).split() == plain.getvalue().split()   # the same text
    assert main(["scan", "examples/paper_zoo.py:cnn_c4", "--input-shape", "3,32,32", "--local", "off"]) == 0
    assert "\x1b" not in capsys.readouterr().out                                    # piped: auto is off
    assert main(["scan", "examples/paper_zoo.py:cnn_c4", "--input-shape", "3,32,32", "--local", "off",
                 "--color", "always"]) == 0
    assert "\x1b[" in capsys.readouterr().out


def test_cli_text_follows_columns_when_piped(capsys, monkeypatch):
    argv = ["scan", "examples/resnet.py:resnet_tiny", "--input-shape", "3,32,32", "--local", "off"]
    for width in (60, 200):
        monkeypatch.setenv("COLUMNS", str(width))
        assert main(argv) == 0
        out = capsys.readouterr().out.splitlines()
        table = out[:out.index("")]
        assert all(len(l) <= width for l in table) and table[0].startswith("layer")
        assert any(l.startswith("hidden for width:") for l in table) == (width == 60)
    monkeypatch.delenv("COLUMNS")
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert max(len(l) for l in out[:out.index("")]) <= tables.DEFAULT_WIDTH


def test_output_width_rule(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert tables.output_width(io.StringIO()) == tables.DEFAULT_WIDTH      # a pipe or a file
    assert tables.output_width(Tty()) == tables.DEFAULT_WIDTH              # a terminal whose size is unknown
    monkeypatch.setenv("COLUMNS", "77")
    assert tables.output_width(io.StringIO()) == 77 and tables.output_width(Tty()) == 77
    monkeypatch.setenv("COLUMNS", "wide")
    assert tables.output_width(io.StringIO()) == tables.DEFAULT_WIDTH


def test_a_long_name_wraps_instead_of_hiding_or_cutting():
    columns = [tables.Column("layer", wrap=True), tables.Column("note", drop=1), tables.Column("status")]
    name = "encoder.blocks.11.attention_with_a_very_long_module_name.query_projection"
    lines = tables.draw(columns, [(name, "n" * 10, "determined")], 50)
    assert all(len(l) <= 50 for l in lines) and not any("…" in l for l in lines)
    assert "".join(l.split()[0] for l in lines[2:] if l.strip()).startswith(name[:40])
    assert sum("determined" in l for l in lines) == 1 and "note" in lines[0]    # fits once the name wraps


def test_compare_tables_fit_the_width(monkeypatch):
    cmp = comparison([_report("examples/paper_zoo.py:cnn_c4"), _report("examples/paper_zoo.py:cnn_narrow")])
    prose = ("per layer (", "not shared:")
    for width in (60, 200):
        monkeypatch.setenv("COLUMNS", str(width))
        buf = io.StringIO()
        compare_text(cmp, buf)
        lines = buf.getvalue().splitlines()
        assert all(len(l) <= width for l in lines if not l.startswith(prose))
        assert lines[0].split()[:2] == ["model", "verdict"] and "* conv2" in buf.getvalue()
        assert any(l.startswith("hidden for width:") for l in lines) == (width == 60)


def test_validate_zoo_table_fits_the_width(monkeypatch):
    models = [{"spec": f"examples/paper_zoo.py:m{i}", "verdict": "LEAKS", "chain_verdict": "LEAKS",
               "optimisation_verdict": "PARTIAL", "predicted_psnr": 40.0, "best_psnr": 38.0, "best_ssim": 0.5,
               "error_db": 2.0, "selected_psnr": 37.0, "best_attacks": ["ig"]} for i in range(3)]
    report = {"kind": "zoo-validation", "models": models, "within_4db": 1.0, "spearman": 1.0, "spearman_raw": 1.0,
              "spearman_interval": [0.5, 1.0], "quality_ceiling_db": 48.131}
    for width in (50, 200):
        monkeypatch.setenv("COLUMNS", str(width))
        buf = io.StringIO()
        render(report, "text", buf)
        lines = buf.getvalue().splitlines()
        table = lines[:next(i for i, l in enumerate(lines) if l.startswith("within 4 dB"))]
        assert all(len(l) <= width for l in table) and "paper_zoo.py:m2" in "\n".join(table)
        assert any(l.startswith("hidden for width:") for l in table) == (width == 50)


def test_validate_results_table_fits_the_width(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "36")
    assert main(["validate", "examples/paper_zoo.py:cnn_narrow", "--input-shape", "3,32,32", "--images", "1",
                 "--attacks", "prior", "--local", "off"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[:next(i for i, l in enumerate(lines) if l.startswith("predicted"))]
    assert all(len(l) <= 36 for l in table) and table[2].split()[:2] == ["prior", "astronaut"]
    assert "hidden for width: s/img" in table and "s/img" not in table[0]
