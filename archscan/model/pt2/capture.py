"""Keep torch quiet while it loads an archive: its logging, warnings and stderr go to a list.

A refused or broken archive must come out as one line on stderr.  torch, while deserializing,
logs through ``logging`` (with its own handlers when TORCH_LOGS is set), emits warnings, prints
to ``sys.stderr`` and, from C++, writes to file descriptor 2; all four are captured so that the
caller can show them under ``--debug`` instead.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator

from archscan.model.pt2.errors import one_line

#: how much of what C++ code wrote to file descriptor 2 is kept
_FD_CAPTURE_LIMIT = 64 * 1024


class _CaptureHandler(logging.Handler):
    """A logging handler that appends one line per record to a list."""

    def __init__(self, sink: list[str]):
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:  # never raises, never prints
        try:
            msg = record.getMessage()
        except Exception:
            msg = f"{record.msg} {record.args!r}"
        self.sink.append(f"{record.levelname} {record.name}: {one_line(msg, 500)}")

    def handleError(self, record):  # pragma: no cover - emit() already swallows
        pass


@contextlib.contextmanager
def quiet(sink: list[str] | None = None, capture_fd: bool = True) -> Iterator[list[str]]:
    """Capture torch logging, warnings, Python-level and fd-level stderr into ``sink``.

    Parameters
    ----------
    sink : list of str, optional
        Receives one line per log record, warning and line written to stderr (a new list if
        None).
    capture_fd : bool
        Also redirect file descriptor 2, where torch's C++ code writes.

    Yields
    ------
    list of str
        The sink.
    """
    sink = sink if sink is not None else []
    with _torch_logging_to(sink), _stderr_to(sink, capture_fd), _warnings_to(sink):
        yield sink


@contextlib.contextmanager
def _torch_logging_to(sink: list[str]) -> Iterator[None]:
    """Route the ``torch`` logger tree to ``sink`` at WARNING and above (or the level set)."""
    tlog = logging.getLogger("torch")
    saved_level = tlog.level
    handler = _CaptureHandler(sink)
    # torch._logging may give child loggers (TORCH_LOGS=...) their own handlers: swap them all
    swapped = []
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and (name == "torch" or name.startswith("torch.")) \
                and (lg.handlers or name == "torch"):
            swapped.append((lg, lg.handlers[:], lg.propagate))
            lg.handlers = [handler]
            lg.propagate = False
    if tlog.level == logging.NOTSET or tlog.level > logging.WARNING:
        tlog.setLevel(logging.WARNING)
    saved_raise = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        yield
    finally:
        logging.raiseExceptions = saved_raise
        for lg, handlers, propagate in swapped:
            lg.handlers = handlers
            lg.propagate = propagate
        tlog.setLevel(saved_level)


@contextlib.contextmanager
def _stderr_to(sink: list[str], capture_fd: bool) -> Iterator[None]:
    """Redirect file descriptor 2 (optionally) and ``sys.stderr``; their lines go to ``sink``."""
    fd_saved, tmp = _redirect_fd2() if capture_fd else (None, None)
    err_buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(err_buf):
            yield
    finally:
        if fd_saved is not None:
            _restore_fd2(fd_saved, tmp, sink)
        sink.extend(f"stderr: {line}" for line in err_buf.getvalue().splitlines() if line.strip())


def _redirect_fd2():
    """Point file descriptor 2 at a temporary file: (saved descriptor, file), or (None, None)."""
    try:
        sys.stderr.flush()    # what Python already buffered belongs to the real stderr
    except Exception:
        pass
    try:
        fd_saved = os.dup(2)
    except OSError:
        return None, None
    try:
        tmp = tempfile.TemporaryFile()
        os.dup2(tmp.fileno(), 2)
    except OSError:
        os.close(fd_saved)
        return None, None
    return fd_saved, tmp


def _restore_fd2(fd_saved: int, tmp, sink: list[str]) -> None:
    """Put file descriptor 2 back and move what was written to it into ``sink``."""
    os.dup2(fd_saved, 2)
    os.close(fd_saved)
    tmp.seek(0)
    data = tmp.read(_FD_CAPTURE_LIMIT).decode("utf-8", "replace")
    tmp.close()
    sink.extend(f"stderr: {line}" for line in data.splitlines() if line.strip())


@contextlib.contextmanager
def _warnings_to(sink: list[str]) -> Iterator[None]:
    """Record every warning (each time it is raised) and append it to ``sink``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                sink.append(f"warning {w.category.__name__}: {one_line(w.message, 500)}")
