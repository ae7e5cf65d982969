"""validate --format html: one model's page (results, best per image with its configuration, skipped
attacks, the reconstruction grid inline) and the zoo page (table with the winning configuration,
scatter, Spearman interval), self-contained."""
from __future__ import annotations

import re
from pathlib import Path

from archscan.formatters.validation_html import render

ROOT = Path(__file__).resolve().parents[1]


def _external_refs(page: str) -> list:
    return re.findall(r"(?:src|href)=['\"](?!data:)([^'\"]+)", page)


def test_one_model_page_from_the_cli(tmp_path, capsys):
    from archscan.cli.main import main
    code = main(["validate", f"{ROOT}/examples/paper_zoo.py:cnn_narrow", "--input-shape", "3,32,32", "--images", "2",
                 "--attacks", "prior,rgap,april", "--local", "off", "--format", "html"])
    page = capsys.readouterr().out
    assert code == 0 and page.startswith("<!doctype html>") and not _external_refs(page)
    assert page.count("data:image/png;base64,") == 1          # the grid, embedded although no -o was given
    assert "<h2>Best per image</h2>" in page and "astronaut" in page and "rgap" in page
    code = main(["validate", f"{ROOT}/examples/paper_zoo.py:cnn_narrow", "--input-shape", "3,32,32", "--images", "1",
                 "--attacks", "prior", "--local", "off", "--format", "html", "-o", str(tmp_path / "v")])
    capsys.readouterr()
    assert code == 0 and sorted(p.name for p in (tmp_path / "v").iterdir()) == ["grid.png", "report.html"]


def _zoo_report():
    models = [{"spec": f"examples/paper_zoo.py:m{i}", "verdict": v, "predicted_psnr": p, "psnr_interval": [p - 1, p + 1],
               "best_psnr": b, "best_ssim": 0.5, "best_attacks": ["ig"], "best_configurations": [f"ig tv=1e-0{i}"]}
              for i, (v, p, b) in enumerate([("LEAKS", 40.0, 38.0), ("PARTIAL", 20.0, 18.5), ("RESISTANT", 12.0, 12.5)],
                                            start=1)]
    return {"kind": "zoo-validation", "manifest": "examples/manifest.toml", "models": models, "attacks": ["prior", "ig"],
            "budget": "fast", "within_4db": 1.0, "spearman": 1.0, "spearman_interval": [0.5, 1.0],
            "quality_ceiling_db": 48.131}


def test_zoo_page_shows_every_model_its_winning_configuration_and_the_scatter():
    page = render(_zoo_report())
    assert not _external_refs(page) and page.count("data:image/png;base64,") == 1
    for i in (1, 2, 3):
        assert f"paper_zoo.py:m{i}" in page and f"ig tv=1e-0{i}" in page
    assert "[0.5, 1.0]" in page and "within 4 dB: 1.0" in page and "[39.0, 41.0]" in page


def test_markdown_for_one_model_and_for_a_zoo(capsys):
    from archscan.cli.main import main
    import io

    from archscan.formatters import render
    code = main(["validate", f"{ROOT}/examples/paper_zoo.py:cnn_narrow", "--input-shape", "3,32,32", "--images", "1",
                 "--attacks", "prior,analytic", "--local", "off", "--format", "markdown"])
    md = capsys.readouterr().out
    assert code == 0 and md.startswith("## archscan validate:") and "| astronaut |" in md
    assert "**analytic** skipped:" in md
    buf = io.StringIO()
    render(_zoo_report(), "markdown", buf)
    zoo = buf.getvalue()
    assert zoo.count("| `paper_zoo.py:m") == 3 and "ig tv=1e-02" in zoo and "[0.5, 1.0]" in zoo
