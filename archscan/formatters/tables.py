"""Text tables that fit the output's width, drawn with rich: scan's layer table, compare's tables and
validate's all go through here (one width rule, one dropping rule, one console set-up).

Width (``output_width``): ``COLUMNS`` when set (a positive integer), else the terminal's width when
the stream is a terminal, else ``DEFAULT_WIDTH`` -- so files, pipes and golden files do not depend
on the terminal that wrote them.  A table never exceeds it: columns with a ``drop`` rank are hidden,
lowest priority (``drop=1``) first, until the rest fits with the one ``wrap`` column (a name) held
to at most ``WRAP_BUDGET`` characters; that column then wraps or folds to the space left.  Cells are
never cut with an ellipsis; a line under the table names the hidden columns (``hidden_note``).
Colour off is plain text (no escape codes at all); colour on is rich's 16-colour ANSI.
"""
from __future__ import annotations

import io
import os
import re
import sys
from dataclasses import dataclass

DEFAULT_WIDTH = 120   # piped or written to a file, without COLUMNS
WRAP_BUDGET = 24      # the wrapping column gets at least this much (or its natural width) before columns are hidden
GAP = 2               # characters between two columns (one of padding, one of divider)
_TRAILING = re.compile(r"[ ]+((?:\x1b\[[0-9;]*m)*)$")


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"      # left | right
    drop: int | None = None    # hidden for width in increasing order; None: always shown
    wrap: bool = False         # the one column that may wrap (a layer or model name)


def output_width(stream=None) -> int:
    """``COLUMNS`` if set, else the terminal's width (``stream`` defaults to standard output), else
    ``DEFAULT_WIDTH``."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty and isatty():
        try:
            return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return DEFAULT_WIDTH
    return DEFAULT_WIDTH


def _cell_width(text: str) -> int:
    from rich.cells import cell_len
    return max((cell_len(line) for line in text.split("\n")), default=0)


def fit(columns: list[Column], rows: list[tuple], width: int) -> list[int]:
    """Indices of the columns shown at ``width``: every column when the table fits, else the ones
    left after hiding droppable columns in ``drop`` order."""
    need = [min(w, max(WRAP_BUDGET, _cell_width(c.header))) if c.wrap else w
            for w, c in zip(_natural(columns, rows), columns)]
    kept = list(range(len(columns)))
    order = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop is not None)
    total = lambda: sum(need[i] for i in kept) + GAP * (len(kept) - 1)
    for _, i in order:
        if total() <= width:
            break
        kept.remove(i)
    return kept


def _natural(columns: list[Column], rows: list[tuple]) -> list[int]:
    return [max([_cell_width(c.header)] + [_cell_width(r[i]) for r in rows]) for i, c in enumerate(columns)]


def natural_width(columns: list[Column], rows: list[tuple]) -> int:
    """The width of the whole table, every column shown and nothing wrapped."""
    return sum(_natural(columns, rows)) + GAP * (len(columns) - 1)


def hidden_note(columns: list[Column], kept: list[int], full: int, width: int) -> list[str]:
    """The line(s) under a table that hid columns for width, wrapped to ``width`` between column
    names (empty when none was hidden); ``full`` is the width that shows every column."""
    hidden = [c.header for i, c in enumerate(columns) if i not in kept]
    if not hidden:
        return []
    them = "them" if len(hidden) > 1 else "it"
    words = ["hidden for width:"] + [h + "," for h in hidden[:-1]] + [hidden[-1], f"({full} columns show {them},",
                                                                          f"e.g. COLUMNS={full})"]
    out = [words[0]]
    for w in words[1:]:
        if _cell_width(out[-1]) + 1 + _cell_width(w) <= width:
            out[-1] += " " + w
        else:
            out.append(w)
    return out


def console(colour: bool, width: int, file=None):
    """The rich console every text renderer writes through: colour on is 16-colour ANSI whatever the
    stream (``--color always`` into a pipe), colour off writes no escape code; the environment
    (NO_COLOR, FORCE_COLOR, COLUMNS) was already read by the caller."""
    from rich.console import Console
    return Console(file=file if file is not None else io.StringIO(), width=width, force_terminal=colour,
                   color_system="standard" if colour else None, no_color=not colour, force_jupyter=False,
                   force_interactive=False, legacy_windows=False, highlight=False, markup=False, emoji=False)


def _box():
    from rich.box import Box
    # ASCII rules under the header and above a closing section (the totals), no vertical lines:
    # the same on every terminal encoding, and in files.
    return Box(" -- \n    \n -- \n    \n -- \n -- \n    \n -- \n", ascii=True)


def draw(columns: list[Column], rows: list[tuple], width: int, colour: bool = False, styles: list | None = None,
         sections: tuple = ()) -> list[str]:
    """The table (the columns ``fit`` keeps, then the hidden-columns note) as lines no wider than
    ``width``.  ``styles``: a rich style per row (used only with colour); ``sections``: indices of
    rows after which a rule is drawn (e.g. before a totals row)."""
    from rich.table import Table
    kept = fit(columns, rows, width)
    table = Table(box=_box(), show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), highlight=False,
                  header_style="bold" if colour else None)
    for i in kept:
        c = columns[i]
        table.add_column(c.header, justify=c.justify, no_wrap=not c.wrap, overflow="fold")
    styles = styles or [None] * len(rows)
    for n, (row, style) in enumerate(zip(rows, styles)):
        table.add_row(*(row[i] for i in kept), style=style if colour else None, end_section=n in sections)
    return render_lines(table, colour, width) + hidden_note(columns, kept, natural_width(columns, rows), width)


def render_lines(renderable, colour: bool, width: int) -> list[str]:
    """Any rich renderable as lines (trailing blanks stripped)."""
    con = console(colour, width)
    con.print(renderable)
    return [_TRAILING.sub(r"\1", line) for line in con.file.getvalue().split("\n")[:-1]]


def text_lines(lines: list, colour: bool, width: int) -> list[str]:
    """Lines of prose (``str`` or rich ``Text``) through the same console, never wrapped or cut: the
    verdict, findings and gate lines keep their content whatever the width."""
    con = console(colour, width)
    for line in lines:
        con.print(line, soft_wrap=True)
    return con.file.getvalue().split("\n")[:-1]
