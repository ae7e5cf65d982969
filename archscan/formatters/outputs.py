"""Where a report goes: ``--format FMT[:PATH]`` (repeatable) and ``-o``; one renderer per format."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from archscan.errors import InputError
from archscan.formatters import FORMATTERS, render


@dataclass(frozen=True)
class Output:
    fmt: str
    path: str | None   # None: standard output


def parse_outputs(formats: list[str], output: str | None = None, names=tuple(FORMATTERS)) -> list[Output]:
    """``["text", "sarif:out.sarif"]`` -> outputs; ``-o`` names the file of the one format without a path."""
    items = []
    for item in formats or ["text"]:
        fmt, sep, path = item.partition(":")
        if fmt not in names:
            raise InputError(f"--format {item!r}: expected FORMAT or FORMAT:PATH, FORMAT one of {', '.join(names)}")
        if sep and not path:
            raise InputError(f"--format {item!r}: empty path after ':'")
        items.append(Output(fmt, None if path in ("", "-") else path))
    bare = [i for i, o in enumerate(items) if o.path is None]
    if len(bare) > 1:
        raise InputError("--format: only one format can go to standard output; give the others a path (FORMAT:PATH)")
    if output:
        if not bare:
            raise InputError("-o: every --format already names its file")
        items[bare[0]] = Output(items[bare[0]].fmt, output)
    return items


def write_outputs(report: dict, outputs: list[Output], quiet: bool = False, renderers=None) -> bool:
    """Render every output; True when the text format went to standard output."""
    for out in outputs:
        if out.path is None:
            _render(report, out.fmt, sys.stdout, quiet, renderers)
            continue
        path = Path(out.path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            _render(report, out.fmt, fh, quiet, renderers)
    return any(o.fmt == "text" and o.path is None for o in outputs)


def _render(report, fmt, stream, quiet, renderers) -> None:
    if renderers is None:
        render(report, fmt, stream, quiet=quiet)
    else:
        renderers[fmt](report, stream)
