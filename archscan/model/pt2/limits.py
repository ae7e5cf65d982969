"""Size and length caps: what an archive may ask the loader to hold in memory or parse."""
from __future__ import annotations

import os

GiB = 1 << 30
MiB = 1 << 20
MAX_ENTRIES = 100_000
#: JSON / text / example-input entries are parsed in memory: cap them separately.
MAX_METADATA_BYTES = 256 * MiB
#: refuse an entry whose uncompressed size exceeds this many times its compressed size ...
MAX_COMPRESSION_RATIO = 200
#: ... once it is larger than this (torch writes its archives uncompressed, ratio 1:1).
RATIO_CHECK_ABOVE = 1 * MiB
#: entry names, graph names and attribute paths longer than this are refused
MAX_NAME_LEN = 1024
#: symbolic-shape expressions and guards longer than this are refused before parsing
MAX_EXPR_LEN = 64 * 1024


def default_max_bytes() -> int:
    """The default cap on an archive's uncompressed size.

    Returns
    -------
    int
        The smaller of 4 GiB and half of the memory available right now (at least 1).
    """
    return max(1, min(4 * GiB, _available_memory() // 2))


def _available_memory() -> int:
    """Bytes of memory available now: /proc/meminfo, else sysconf, else a guess of 8 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * GiB
