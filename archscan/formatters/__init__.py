"""One registry of renderers for every report archscan writes: a scan (``report.records.ScanReport``),
a comparison (``report.compare.Comparison``) and a validation (validate's report of one model or a
zoo).  ``render(report, fmt, stream)`` finds the kind from the report itself; every renderer is
called as ``renderer(report, stream, style)``."""

import json
from dataclasses import dataclass

from archscan.formatters import (annotations, comparison, html, json_format, junit, markdown, sarif, text,
                                 validation_html, validation_markdown, validation_text)
from archscan.report.compare import Comparison
from archscan.report.records import ScanReport


@dataclass(frozen=True)
class Style:
    """How text is drawn: ``quiet`` (the verdict and the gate only), ``colour`` (auto | always | never)."""
    quiet: bool = False
    colour: str = "auto"


def _plain(renderer):
    return lambda report, stream, style: renderer(report, stream)


def _string(renderer):
    return lambda report, stream, style: stream.write(renderer(report))


def _scan_text(report, stream, style: Style) -> None:
    text.render(report, stream, quiet=style.quiet, colour_choice=style.colour)


REGISTRY = {
    "scan": {"text": _scan_text, "json": _plain(json_format.render), "sarif": _plain(sarif.render),
             "junit": _plain(junit.render), "markdown": _plain(markdown.render), "html": _plain(html.render),
             "github": _plain(annotations.render_github), "gitlab": _plain(annotations.render_gitlab)},
    "compare": {"text": _plain(comparison.render_text), "json": _plain(comparison.render_json),
                "markdown": _plain(comparison.render_markdown)},
    "validate": {"text": _string(validation_text.render),
                 "json": _string(lambda r: json.dumps(r, indent=2) + "\n"),
                 "html": _string(validation_html.render), "markdown": _string(validation_markdown.render)},
}
FORMATTERS = REGISTRY["scan"]   # the scan's formats (--format of scan and suggest)


def formats(kind: str) -> tuple[str, ...]:
    """The formats a kind of report comes in (scan, compare, validate)."""
    return tuple(REGISTRY[kind])


def kind_of(report) -> str:
    if isinstance(report, ScanReport):
        return "scan"
    if isinstance(report, Comparison):
        return "compare"
    return "validate"          # validate's reports are JSON-shaped dicts (one model, or kind "zoo")


def render(report, fmt: str, stream, quiet: bool = False, colour: str = "auto") -> None:
    """Write ``report`` as ``fmt``; ``quiet`` shortens a scan's text to the verdict and the gate;
    ``colour`` (auto | always | never) is the text format's ``--color``."""
    kind = kind_of(report)
    if fmt not in REGISTRY[kind]:
        raise ValueError(f"unknown {kind} format {fmt!r}; choose from {', '.join(REGISTRY[kind])}")
    REGISTRY[kind][fmt](report, stream, Style(quiet, colour))
