"""A one-line progress indicator on stderr, only on a terminal: a bar when the total is known
(``compare``: models), else a spinner with the elapsed time (``scan``).  Nothing is drawn when
stderr is piped, under ``--quiet`` or with ``ARCHSCAN_NO_PROGRESS=1``; no dependency."""
from __future__ import annotations

import os
import sys
import threading
import time

FRAMES = "|/-\\"
WIDTH = 24


def wanted(stream=None, quiet: bool = False) -> bool:
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return (not quiet and bool(isatty and isatty()) and os.environ.get("ARCHSCAN_NO_PROGRESS") != "1"
            and os.environ.get("TERM") != "dumb")


class Progress:
    """Context manager; ``update(done, label)`` sets how many items are done and names the current one."""

    def __init__(self, label: str, total: int | None = None, stream=None, enabled: bool = True):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = None
        self._t0 = time.monotonic()

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()

    def update(self, done: int, label: str | None = None) -> None:
        self.done = done
        if label:
            self.label = label

    def line(self, tick: int) -> str:
        elapsed = f"{time.monotonic() - self._t0:5.1f}s"
        if not self.total:
            return f"{FRAMES[tick % len(FRAMES)]} {self.label}  {elapsed}"
        filled = int(WIDTH * min(self.done, self.total) / self.total)
        return f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} {self.label}  {elapsed}"

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.1):
            self.stream.write("\r\033[K" + self.line(tick)[:200])
            self.stream.flush()
            tick += 1
