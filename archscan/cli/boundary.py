"""The one error boundary of every command: what reaches the user, and with which exit code.

0 done (and the gate, if any, passed), 1 the gate failed, 2 a problem with what the user gave
(bad input, a model that raises, exits or cannot run, a resource limit), 3 archscan's own bug
(one line and the path of the saved traceback), 130 interrupted, 141 the output pipe closed.
A crash is never 1; ``--debug`` prints the traceback and keeps the same exit code.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback

from archscan.errors import ArchscanError

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141
CODES = {EXIT_OK: "done (the gate passed, if one was set)", EXIT_GATE: "the gate failed",
         EXIT_INPUT: "bad input, or a model that cannot be loaded, traced or run",
         EXIT_INTERNAL: "internal error (a bug in archscan: please report it with the saved traceback)",
         EXIT_INTERRUPTED: "interrupted (Ctrl-C)", EXIT_BROKEN_PIPE: "the output pipe was closed"}


def _say(message: str, exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"archscan: {message}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _saved_traceback(exc: BaseException) -> str:
    """Write the traceback to a file the user can attach to a report; its path ('' if none)."""
    try:
        fd, path = tempfile.mkstemp(prefix="archscan-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        return path
    except OSError:
        return ""


@contextlib.contextmanager
def model_output_to_stderr():
    """While the user's model code runs, what it prints goes to stderr: standard output carries
    only the report (a ``print`` in ``forward`` must not corrupt JSON piped into another tool)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _broken_pipe() -> int:
    """Stop quietly: point stdout at devnull so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def run(handler, args, debug: bool) -> int:
    """Call ``handler(args)`` and map everything it raises to one line and a documented exit code."""
    try:
        return handler(args)
    except BrokenPipeError:
        return _broken_pipe()
    except KeyboardInterrupt as e:
        _say("interrupted", e, debug)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # archscan never exits from inside a command: the user's code did
        _say(f"error: the model's code called sys.exit({e.code!r}) (a model spec is code that runs)", e, debug)
        return EXIT_INPUT
    except ArchscanError as e:
        _say(f"error: {' '.join(str(e).split())}", e, debug)
        return EXIT_INPUT
    except MemoryError as e:
        _say("error: out of memory (the model or --input-shape is too large for this machine)", e, debug)
        return EXIT_INPUT
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _say(f"error: {where}{e.strerror or _one_line(e)}", e, debug)
        return EXIT_INPUT
    except Exception as e:  # noqa: BLE001 - the boundary: a bug of ours, never exit 1
        path = _saved_traceback(e)
        saved = f"; traceback saved to {path}" if path else ""
        _say(f"internal error: {_one_line(e)}{saved} (please report it)", e, debug)
        return EXIT_INTERNAL
