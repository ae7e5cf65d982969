"""One renderer per output format, all over the same report dict (``render(report, stream)``);
validate's reports (one model, a zoo) have their own registry of the formats they come in."""
import json

from archscan.formatters import (annotations, html, json_format, junit, markdown, sarif, text, validation_html,
                                 validation_markdown, validation_text)

FORMATTERS = {"text": text.render, "json": json_format.render, "sarif": sarif.render, "junit": junit.render,
              "markdown": markdown.render, "html": html.render, "github": annotations.render_github,
              "gitlab": annotations.render_gitlab}


def render(report: dict, fmt: str, stream, quiet: bool = False, colour: str = "auto") -> None:
    """Write ``report`` as ``fmt``; ``quiet`` shortens the text format to the verdict and the gate;
    ``colour`` (auto | always | never) is the text format's ``--color``."""
    if fmt not in FORMATTERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATTERS)}")
    if fmt == "text":
        text.render(report, stream, quiet=quiet, colour_choice=colour)
    else:
        FORMATTERS[fmt](report, stream)


VALIDATION_FORMATTERS = {"text": validation_text.render, "json": lambda r: json.dumps(r, indent=2) + "\n",
                         "html": validation_html.render, "markdown": validation_markdown.render}


def render_validation(report: dict, fmt: str) -> str:
    """A validate report (one model or a zoo) as ``fmt``."""
    if fmt not in VALIDATION_FORMATTERS:
        raise ValueError(f"unknown validate format {fmt!r}; choose from {', '.join(VALIDATION_FORMATTERS)}")
    return VALIDATION_FORMATTERS[fmt](report)
