"""The data-only inspection of a whole archive: every check, in the order torch would meet them.

Nothing here deserializes anything except, with ``weights_only=True``, the example inputs.  An
archive is accepted only when it holds what ``torch.export.save`` writes for a plain program and
nothing else.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable

from archscan.model.pt2.archive import ArchiveView, check_entries, open_zip
from archscan.model.pt2.configs import (
    check_payload_config,
    check_sample_inputs,
    dtype_sizes,
)
from archscan.model.pt2.errors import Refusal, UnsafeArchiveError
from archscan.model.pt2.limits import default_max_bytes
from archscan.model.pt2.program import check_program
from archscan.model.pt2.targets import DEFAULT_OP_NAMESPACES

#: (entry, why torch needs it)
_REQUIRED = (("archive_format", "torch's archive reader requires it"),
             ("archive_version", "without it torch falls back to the legacy loader"),
             (".data/version", "torch's zip reader requires it"))


@dataclass
class ArchiveReport:
    """What :func:`inspect_archive` found in an archive it accepted."""

    root: str
    models: list[str]
    entries: dict[str, int]                   # relative entry name -> uncompressed size
    total_bytes: int
    targets: dict[str, set[str]] = field(default_factory=dict)   # model -> node targets


@dataclass(frozen=True)
class Limits:
    """What an archive may contain: the size cap and the operator allow-list."""

    max_bytes: int
    namespaces: frozenset[str]
    extra_targets: frozenset[str]

    @classmethod
    def of(cls, max_bytes: int | None, extra_op_namespaces: Iterable[str],
           extra_targets: Iterable[str]) -> "Limits":
        """The defaults widened by the caller's options (``max_bytes=None``: the default cap)."""
        cap = default_max_bytes() if max_bytes is None else int(max_bytes)
        return cls(cap, frozenset(DEFAULT_OP_NAMESPACES) | frozenset(extra_op_namespaces),
                   frozenset(extra_targets))


def resolve_path(path: Any) -> str:
    """The file name as given (str or PathLike); it is also the name the messages use."""
    if isinstance(path, (str, os.PathLike)):
        p = os.fspath(path)
        return os.fsdecode(p) if isinstance(p, bytes) else p
    raise TypeError(f"expected a file path, got {type(path).__name__}")


def open_archive(path: str) -> BinaryIO:
    """Open ``path`` for reading; a missing file or a directory is an UnsafeArchiveError."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UnsafeArchiveError(path, None, "no such file") from None
    except IsADirectoryError:
        raise UnsafeArchiveError(path, None, "is a directory, not a .pt2 file") from None
    except OSError as e:
        raise UnsafeArchiveError(path, None, f"cannot be opened ({e.strerror})") from None


def inspect_open(fh: BinaryIO, limits: Limits) -> ArchiveReport:
    """Run every data-only check on the open archive ``fh``; raises Refusal."""
    zf, file_size = open_zip(fh)
    with zf:
        entries = check_entries(zf, file_size, limits.max_bytes)
        for required, why in _REQUIRED:
            if required not in entries.infos:
                raise Refusal(required, f"is missing ({why})")
        view = ArchiveView(fh, zf, entries)
        _check_format(view)
        models = sorted(rel[len("models/"):-len(".json")] for rel in entries.infos
                        if rel.startswith("models/"))
        if "model" not in models:
            raise Refusal("models/model.json", "is missing (torch.export.load returns that "
                                               "program)")
        report = ArchiveReport(root=entries.root, models=models,
                               entries={r: i.file_size for r, i in entries.infos.items()},
                               total_bytes=entries.total)
        sizes = dtype_sizes()
        for m in models:
            report.targets[m] = _check_model(view, m, sizes, limits)
        _check_extra_files(view)
        return report


def _check_format(view: ArchiveView) -> None:
    """archive_format must be b'pt2' and archive_version the one this torch reads."""
    from torch.export.pt2_archive.constants import ARCHIVE_VERSION_VALUE

    fmt = view.read("archive_format")
    if fmt != b"pt2":
        raise Refusal("archive_format", f"is {fmt[:20]!r}, not b'pt2'")
    ver = view.read("archive_version")
    if ver.decode("ascii", "replace") != ARCHIVE_VERSION_VALUE:
        raise Refusal("archive_version", f"is {ver[:20]!r}; this torch reads archive "
                                         f"version {ARCHIVE_VERSION_VALUE!r}")


def _check_model(view: ArchiveView, m: str, sizes: dict[int, int], limits: Limits) -> set[str]:
    """One model's configs, example inputs and program; returns the program's node targets."""
    infos = view.entries.infos
    for rel, what in ((f"data/weights/{m}_weights_config.json", "weights"),
                      (f"data/constants/{m}_constants_config.json", "constants")):
        if rel not in infos:
            raise Refusal(rel, f"is missing (every model needs its {what} config)")
        check_payload_config(rel, view.read_json(rel), what, infos, sizes, limits.max_bytes)
    rel = f"data/sample_inputs/{m}.pt"
    if rel not in infos:
        raise Refusal(rel, "is missing (every model needs its example-inputs entry)")
    check_sample_inputs(rel, view.read(rel))
    rel = f"models/{m}.json"
    return check_program(rel, view.read_json(rel), limits.namespaces, limits.extra_targets)


def _check_extra_files(view: ArchiveView) -> None:
    """torch decodes every extra/ file as UTF-8 text."""
    for rel in view.entries.infos:
        if rel.startswith("extra/"):
            try:
                view.read(rel).decode("utf-8")
            except UnicodeDecodeError:
                raise Refusal(rel, "is not UTF-8 text (torch decodes extra files)") from None


def inspect_archive(path: str | os.PathLike, max_bytes: int | None = None, *,
                    extra_op_namespaces: Iterable[str] = (),
                    extra_targets: Iterable[str] = ()) -> ArchiveReport:
    """Run every data-only check on an archive, without letting torch deserialize it.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pt2`` file.
    max_bytes : int, optional
        Cap on the total (and per-entry) uncompressed size; default
        :func:`~archscan.model.pt2.limits.default_max_bytes`.
    extra_op_namespaces, extra_targets : iterable of str
        Widen the operator allow-list (e.g. ``{"torchvision"}``).

    Returns
    -------
    ArchiveReport
        The archive's models, entries and node targets.

    Raises
    ------
    UnsafeArchiveError
        The archive is refused (one-line message naming the file and the entry).
    """
    display = resolve_path(path)
    limits = Limits.of(max_bytes, extra_op_namespaces, extra_targets)
    with open_archive(display) as fh:
        try:
            return inspect_open(fh, limits)
        except Refusal as r:
            raise UnsafeArchiveError(display, r.entry, r.reason) from None
