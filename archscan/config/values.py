"""The one parser for option values that several places accept (command line, [tool.archscan],
the pytest plugin, ``init``): the same text means the same thing, and is refused the same way,
everywhere."""
from __future__ import annotations

import re

from archscan.errors import InputError

MAX_BATCH = 65536   # larger than any federated client's batch in the literature; the rank counts stay exact

_SHAPE_ITEM = re.compile(r"\s*(\d+)\s*")


def parse_shape(text, where: str = "--input-shape") -> tuple[int, ...] | None:
    """One image's shape: three positive integers separated by ``,`` or ``x`` (``3,32,32``,
    ``3x32x32``, spaces around the numbers allowed) or a list/tuple of three ints (config);
    anything else -- a trailing or doubled separator, two or four numbers, a zero -- is refused."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        if len(text) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in text):
            raise InputError(f"{where} {list(text)!r}: expected three positive integers C,H,W")
        shape = tuple(text)
    else:
        parts = re.split(r"[,x]", str(text))
        if len(parts) != 3 or not all(_SHAPE_ITEM.fullmatch(p) for p in parts):
            raise InputError(f"{where} {text!r}: expected three positive integers C,H,W, e.g. 3,32,32")
        shape = tuple(int(p) for p in parts)
    if min(shape) < 1:
        raise InputError(f"{where} {text!r}: expected three positive integers C,H,W (got a zero)")
    return shape


def format_shape(shape) -> str:
    return ",".join(str(v) for v in shape)


def spec_file(spec: str) -> str:
    """The file a model spec names: the .pt2 itself, or the part before ``:NAME``."""
    return spec if spec.endswith(".pt2") else spec.rpartition(":")[0]


def check_seed(value: int, where: str = "--seed") -> int:
    if value < 0:
        raise InputError(f"{where} {value}: must be >= 0")
    return value


def check_batch_size(value: int, where: str = "--batch-size") -> int:
    if not 1 <= value <= MAX_BATCH:
        raise InputError(f"{where} {value}: must be between 1 and {MAX_BATCH}")
    return value
