"""One renderer per output format, all over the same report dict."""
from . import json_format, text

FORMATTERS = {"text": text.render, "json": json_format.render}


def render(report: dict, fmt: str, stream) -> None:
    if fmt not in FORMATTERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATTERS)}")
    FORMATTERS[fmt](report, stream)
