"""One place for every numba flag, and a numba cache that works on read-only installs.

``cache=True`` makes numba write compiled code beside the module; an installed, read-only
package would then fail at import.  We pick a writable cache directory *before* numba is
imported: ``NUMBA_CACHE_DIR`` when the user set it, else a per-user cache directory.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

FASTMATH = False  # exact modular arithmetic: never let LLVM reassociate float ops
PARALLEL = False  # two shared cores: threads cost more than they give for these kernels
CACHE = True


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".archscan-write-test"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def _choose_cache_dir() -> str | None:
    """Return a writable directory for numba's cache, or None to disable caching."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (Path(base) / "archscan" / "numba", Path(tempfile.gettempdir()) / "archscan-numba"):
        if _writable(candidate):
            return str(candidate)
    return None


_cache_dir = _choose_cache_dir()
if _cache_dir is None:
    CACHE = False
else:
    os.environ.setdefault("NUMBA_CACHE_DIR", _cache_dir)

import numba  # noqa: E402  (must come after the cache directory is chosen)

if _cache_dir is not None:
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


def njit(fn):
    """``numba.njit`` with the project's flags."""
    return numba.njit(cache=CACHE, fastmath=FASTMATH, parallel=PARALLEL)(fn)
