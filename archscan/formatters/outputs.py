"""Where a report goes: ``--format FMT[:PATH]`` (repeatable) and ``-o``; one renderer per format."""
from __future__ import annotations

import os
import sys
import tempfile
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


def check_outputs(outputs: list[Output], inputs: dict) -> None:
    """Before any work: refuse an output that is one of the user's inputs (resolved through
    symlinks) or that cannot be written.  ``inputs``: {what: path} (model file, weights, ...)."""
    mine = {os.path.realpath(p): what for what, p in inputs.items() if p}
    for out in outputs:
        if out.path is None:
            continue
        real = os.path.realpath(out.path)
        if real in mine:
            raise InputError(f"--format {out.fmt}:{out.path}: that is the {mine[real]}; refusing to overwrite an input")
        parent = Path(real).parent
        existing = next((d for d in (parent, *parent.parents) if d.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
            raise InputError(f"--format {out.fmt}:{out.path}: cannot write there ({existing} is not a writable folder)")


def write_outputs(report, outputs: list[Output], quiet: bool = False, colour: str = "auto") -> bool:
    """Render every output (files atomically, ``write_file``); True when text went to standard output."""
    for out in outputs:
        if out.path is None:
            render(report, out.fmt, sys.stdout, quiet=quiet, colour=colour)
        else:
            write_file(out.path, lambda fh, fmt=out.fmt: render(report, fmt, fh, quiet=quiet,
                                                                 colour="never" if colour == "auto" else colour))
    return any(o.fmt == "text" and o.path is None for o in outputs)


def write_file(target: str, write) -> None:
    """``write(stream)`` into ``target`` atomically: a temporary file beside it, then renamed, so an
    interrupted run leaves the previous file intact; said on stderr when outside the working directory."""
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            write(fh)
        os.chmod(tmp, _file_mode(path))   # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, os.path.realpath(path) if path.is_symlink() else path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _name_if_outside(path)


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what a plain ``open(path, "w")`` would give (0666
    less the umask)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _name_if_outside(path: Path) -> None:
    """A report written outside the working directory is allowed, and said."""
    real, here = Path(os.path.realpath(path)), Path.cwd().resolve()
    if here not in real.parents:
        print(f"archscan: wrote {real} (outside the working directory {here})", file=sys.stderr)

