"""The errors a ``.pt2`` load raises, and the helpers that keep their messages to one line.

Every message names the file and, when one entry is to blame, that entry, so that a CLI can print
it as is and a user can find what was refused without a traceback.
"""
from __future__ import annotations

from typing import Any, Iterable

#: the reason appended wherever loading would unpickle an arbitrary object
PICKLE_WHY = "(a pickled object, which would run code on load)"


def one_line(text: Any, limit: int = 300) -> str:
    """``text`` with its whitespace runs folded to single spaces, cut to ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (torch's errors run to pages)."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return one_line(line, 200)
    return type(exc).__name__


def quoted(value: Any) -> str:
    """``value`` as a short quoted string, safe to put inside a one-line message."""
    return repr(one_line(value, 120))


class Pt2ArchiveError(ValueError):
    """Base class: a .pt2 archive that could not be loaded (always a one-line message)."""

    def __init__(self, message: str, *, path: str = "", entry: str | None = None,
                 reason: str = "", details: Iterable[str] = ()):
        super().__init__(message)
        self.path = path
        self.entry = entry
        self.reason = reason
        #: what torch logged / warned / printed while trying (for a --debug view)
        self.details = list(details)


class UnsafeArchiveError(Pt2ArchiveError):
    """The archive was refused: it is malformed, or loading it could run code or exhaust memory."""

    def __init__(self, path: str, entry: str | None, reason: str, details: Iterable[str] = ()):
        where = f"{entry} " if entry else ""
        super().__init__(one_line(f"{path}: refused: {where}{reason}", 400), path=path,
                         entry=entry, reason=reason, details=details)


class Pt2LoadError(Pt2ArchiveError):
    """The archive passed every safety check but torch could not deserialize it."""

    def __init__(self, path: str, exc: BaseException, details: Iterable[str] = ()):
        first = first_line(exc)
        super().__init__(one_line(f"{path}: torch.export could not load it: "
                                  f"{type(exc).__name__}: {first}", 400),
                         path=path, reason=first, details=details)


class Refusal(Exception):
    """Internal: a check failed.

    The checks do not know the file's name; the public entry points turn this into an
    :class:`UnsafeArchiveError` with the name attached.
    """

    def __init__(self, entry: str | None, reason: str):
        super().__init__(reason)
        self.entry = entry
        self.reason = reason
