"""The sweep's result store: a directory with one JSON file per finished task, named by the task's
key (a hash of everything that determines its result).

A task's file is written once, atomically (a temporary file renamed into place), by the process
that collects results, so an interrupted sweep leaves only whole records and a rerun skips every
task whose file exists.  Wall-clock times are kept apart (``timing/``): the results, and the report
built from them, do not depend on how fast or where a task ran.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from archscan.errors import InputError


def task_key(task: dict) -> str:
    """Stable key of a task: sha256 of its canonical JSON (sorted keys, no whitespace), 24 hex."""
    text = json.dumps(task, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ResultStore:
    """``results/KEY.json`` (the task and its result) and ``timing/KEY.json`` under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"-o {root}: the result store is a folder; that is a file")
        (self.root / "results").mkdir(parents=True, exist_ok=True)
        (self.root / "timing").mkdir(parents=True, exist_ok=True)

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def has(self, key: str) -> bool:
        return self._path("results", key).is_file()

    def get(self, key: str) -> dict:
        return json.loads(self._path("results", key).read_text())

    def put(self, key: str, record: dict, seconds: float | None = None) -> None:
        _atomic_write(self._path("results", key), json.dumps(record, sort_keys=True, indent=1) + "\n")
        if seconds is not None:
            _atomic_write(self._path("timing", key), json.dumps({"seconds": round(seconds, 3)}) + "\n")

    def seconds(self, key: str) -> float | None:
        p = self._path("timing", key)
        return json.loads(p.read_text())["seconds"] if p.is_file() else None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
