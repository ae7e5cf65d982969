"""load_program_safely: inspect an archive as data, then let torch deserialize it, guarded."""
from __future__ import annotations

import os
from typing import BinaryIO, Iterable

import torch

from archscan.model.pt2.errors import Pt2LoadError, Refusal, UnsafeArchiveError
from archscan.model.pt2.guard import Guard, torch_load_guard
from archscan.model.pt2.inspection import (
    Limits,
    inspect_open,
    open_archive,
    resolve_path,
)


def load_program_safely(path: str | os.PathLike, max_bytes: int | None = None, *,
                        extra_op_namespaces: Iterable[str] = (),
                        extra_targets: Iterable[str] = (),
                        log: list[str] | None = None) -> "torch.export.ExportedProgram":
    """Load a ``torch.export`` archive without letting it run code.

    The archive is first inspected as data (:func:`~archscan.model.pt2.inspection.
    inspect_archive`'s checks), then deserialized by torch under
    :func:`~archscan.model.pt2.guard.torch_load_guard`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pt2`` file; messages name it as given.
    max_bytes : int, optional
        Cap on the total (and per-entry) uncompressed size; default
        :func:`~archscan.model.pt2.limits.default_max_bytes`.
    extra_op_namespaces, extra_targets : iterable of str
        Widen the operator allow-list (e.g. ``{"torchvision"}``).
    log : list of str, optional
        Receives what torch logged, warned and printed.

    Returns
    -------
    torch.export.ExportedProgram
        The archive's program ``model``.

    Raises
    ------
    UnsafeArchiveError
        A ValueError, for every refusal.
    Pt2LoadError
        An archive that passed the checks still failed in torch.  Both are Pt2ArchiveError
        with a one-line message.
    """
    display = resolve_path(path)
    limits = Limits.of(max_bytes, extra_op_namespaces, extra_targets)
    sink: list[str] = [] if log is None else log
    with open_archive(display) as fh:
        try:
            inspect_open(fh, limits)
        except Refusal as r:
            raise UnsafeArchiveError(display, r.entry, r.reason) from None
        # Load from the very file object that was inspected: replacing the path in between does
        # not swap the archive (rewriting the file in place still could).
        fh.seek(0)
        return _guarded_load(fh, display, sink)


def _guarded_load(fh: BinaryIO, display: str, sink: list[str]):
    """torch's deserialization under the guard; its first refusal wins over torch's error."""
    error: BaseException | None = None
    program = None
    with torch_load_guard(sink) as guard:
        try:
            program = torch_load(fh, guard)
        except Refusal:
            pass
        except Exception as e:  # torch wraps and re-raises in many ways
            error = e
    if guard.refusals:
        r = guard.refusals[0]
        raise UnsafeArchiveError(display, r.entry, r.reason, details=sink) from None
    if error is not None:
        raise Pt2LoadError(display, error, details=sink) from error
    if program is None:  # pragma: no cover - defensive
        raise Pt2LoadError(display, RuntimeError("no program 'model' in the archive"),
                           details=sink)
    return program


def torch_load(fh: BinaryIO, guard: Guard):
    """``torch.export.load`` minus its legacy-zip fallback.

    The inspection refuses the legacy format; calling ``load_pt2`` directly also surfaces
    torch's real error instead of the fallback's.
    """
    try:
        from torch.export.pt2_archive._package import load_pt2
    except ImportError:  # pragma: no cover - future torch
        return torch.export.load(fh)
    contents = load_pt2(fh)
    if "model" not in contents.exported_programs:
        raise RuntimeError("the archive has no program named 'model'")
    if contents.aoti_runners:
        raise guard.refuse(None, "contains AOTInductor runners")
    return contents.exported_programs["model"]
