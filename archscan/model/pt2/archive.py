"""The zip level of a ``.pt2`` archive: structure, entry names, sizes, and torch's view of it.

torch reads archives with its own C++ zip reader (``PyTorchFileReader``), not with
:mod:`zipfile`.  Two zip readers can disagree on a crafted file (duplicate names, overlapping
entries, a second central directory), so every record list, size and metadata entry is read
through both and must agree: the bytes checked here are the bytes torch will use.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch

from archscan.model.pt2.errors import PICKLE_WHY, Refusal, first_line, one_line, quoted
from archscan.model.pt2.limits import (
    MAX_COMPRESSION_RATIO,
    MAX_ENTRIES,
    MAX_METADATA_BYTES,
    MAX_NAME_LEN,
    RATIO_CHECK_ABOVE,
)

_MODEL_NAME = re.compile(r"[A-Za-z0-9_\-]+\Z")
_META_ENTRIES = {"archive_format", "archive_version", "byteorder", ".data/version",
                 ".data/serialization_id"}
#: top-level names of the pre-2.7 torch.export zip, which torch.export.load deserializes with
#: torch.load(weights_only=False) as a fallback
_LEGACY_NAMES = {"version", "serialized_exported_program.json", "serialized_state_dict.pt",
                 "serialized_state_dict.json", "serialized_constants.pt",
                 "serialized_constants.json", "serialized_example_inputs.pt"}
#: (relative-name pattern, kind) for the entries torch.export.save writes for a plain program
_ENTRY_KINDS = [
    (re.compile(r"data/weights/[A-Za-z0-9_\-]+_weights_config\.json"), "weights_config"),
    (re.compile(r"data/weights/weight_\d+"), "weight"),
    (re.compile(r"data/constants/[A-Za-z0-9_\-]+_constants_config\.json"), "constants_config"),
    (re.compile(r"data/constants/tensor_\d+"), "constant"),
    (re.compile(r"data/sample_inputs/[A-Za-z0-9_\-]+\.pt"), "sample_inputs"),
]
_FOREIGN_PAYLOADS = (("data/executorch/", "an ExecuTorch payload"),
                     ("data/mtia", "an MTIA payload"),
                     ("xl_model_weights/", "an external-weights payload"))


@dataclass
class Entries:
    """The archive's entries, once every zip-level check passed."""

    root: str                              # the one top-level folder
    infos: dict[str, zipfile.ZipInfo]      # name relative to root -> its zip record
    total: int                             # sum of the uncompressed sizes


def open_zip(fh: BinaryIO) -> tuple[zipfile.ZipFile, int]:
    """Open ``fh`` as a zip archive, refusing non-zips and damaged ones; (zip, file size)."""
    fh.seek(0, os.SEEK_END)
    file_size = fh.tell()
    fh.seek(0)
    head = fh.read(4)
    fh.seek(0)
    if file_size == 0:
        raise Refusal(None, "is empty, not a zip archive")
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise Refusal(None, "is not a zip archive (torch.export archives are zip files)")
    try:
        is_zip = zipfile.is_zipfile(fh)
    except zipfile.BadZipFile as e:   # is_zipfile raises for some damage (a multi-disk record)
        raise Refusal(None, f"is a damaged zip archive ({one_line(e, 120)})") from None
    if not is_zip:
        raise Refusal(None, "is a truncated or damaged zip archive "
                            "(no end-of-central-directory record)")
    fh.seek(0)
    try:
        return zipfile.ZipFile(fh), file_size
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError) as e:
        raise Refusal(None, f"is a damaged zip archive ({one_line(e, 120)})") from None


def check_entries(zf: zipfile.ZipFile, file_size: int, max_bytes: int) -> Entries:
    """Check every entry's name, kind and sizes; the total is capped at ``max_bytes``."""
    infos = zf.infolist()
    if not infos:
        raise Refusal(None, "is an empty zip archive")
    if len(infos) > MAX_ENTRIES:
        raise Refusal(None, f"has {len(infos)} entries (more than {MAX_ENTRIES})")
    for info in infos:
        if info.filename in _LEGACY_NAMES:
            raise Refusal(info.filename, "belongs to the legacy (pre-2.7) torch.export zip "
                                         "format, whose loader falls back to torch.load("
                                         "weights_only=False) (pickled objects, which would "
                                         "run code on load)")
    root, total, by_rel = None, 0, {}
    seen: set[str] = set()
    for info in infos:
        root, rel = _relative_name(info.filename, root, seen)
        classify(rel)    # first, so that AOTI / pickle payloads get their specific reason
        _check_sizes(rel, info, file_size, max_bytes)
        total += info.file_size
        if total > max_bytes:
            raise Refusal(None, f"expands to more than the {max_bytes}-byte cap (at entry {rel})")
        if rel.endswith("/"):
            raise Refusal(rel, "is a directory entry (torch.export.save writes none)")
        by_rel[rel] = info
    return Entries(root, by_rel, total)


def _relative_name(name: str, root: str | None, seen: set[str]) -> tuple[str, str]:
    """(root, name below it) for a plain, unique entry name under the archive's one folder."""
    if name in seen:
        raise Refusal(name, "appears twice in the archive (zip readers disagree on which "
                            "copy they return)")
    seen.add(name)
    if len(name) > MAX_NAME_LEN or "\x00" in name or "\\" in name or name.startswith("/"):
        raise Refusal(quoted(name), "is not a plain relative entry name")
    parts = name.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts[:-1]) \
            or parts[-1] in (".", ".."):
        raise Refusal(name, "is not inside the archive's top-level folder "
                            "(torch.export archives put every entry under one folder)")
    if root is not None and parts[0] != root:
        raise Refusal(name, f"is outside the archive's top-level folder {root!r}")
    return parts[0], "/".join(parts[1:])


def _check_sizes(rel: str, info: zipfile.ZipInfo, file_size: int, max_bytes: int) -> None:
    """Refuse encrypted, exotic, inconsistent, oversized, bomb-like and truncated entries."""
    if info.flag_bits & 0x1:
        raise Refusal(rel, "is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise Refusal(rel, f"uses zip compression method {info.compress_type} "
                           "(torch writes stored entries)")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise Refusal(rel, "is a stored entry whose sizes disagree")
    if info.file_size > max_bytes:
        raise Refusal(rel, f"would expand to {info.file_size} bytes "
                           f"(more than the {max_bytes}-byte cap)")
    if info.file_size > RATIO_CHECK_ABOVE and \
            info.file_size > MAX_COMPRESSION_RATIO * max(1, info.compress_size):
        raise Refusal(rel, f"expands {info.compress_size} bytes to {info.file_size} "
                           f"(compression ratio above {MAX_COMPRESSION_RATIO}:1: a zip "
                           "bomb; torch writes its archives uncompressed)")
    if info.header_offset + info.compress_size > file_size:
        raise Refusal(rel, "extends past the end of the file (truncated archive)")


def classify(rel: str) -> str:
    """The kind of entry ``rel`` names (``"model"``, ``"weight"``, ...), or a Refusal.

    Payloads that make torch run native code or unpickle objects are refused by name, before
    anything is read, each with its own reason.
    """
    if rel.startswith("data/aotinductor/") or rel == "data/aotinductor":
        raise Refusal(rel, "is an AOTInductor payload (torch loads its compiled shared "
                           "library, native code, when it loads the archive)")
    for prefix, what in _FOREIGN_PAYLOADS:
        if rel.startswith(prefix):
            raise Refusal(rel, f"is {what}, not part of a plain exported program")
    if rel in _META_ENTRIES:
        return "meta"
    if rel.startswith("extra/"):
        return "extra"
    if rel.startswith("models/"):
        return _classify_model(rel)
    for pattern, kind in _ENTRY_KINDS:
        if pattern.fullmatch(rel):
            return kind
    _refuse_pickled_payload(rel)
    raise Refusal(rel, "is not an entry torch.export.save writes for a plain program")


def _classify_model(rel: str) -> str:
    m = re.fullmatch(r"models/(.+)\.json", rel)
    if not m:
        raise Refusal(rel, "is not models/<name>.json (torch would load it as a model)")
    if not _MODEL_NAME.match(m.group(1)):
        raise Refusal(rel, "is a model file with an unusual name")
    return "model"


def _refuse_pickled_payload(rel: str) -> None:
    """Entries of the kinds torch unpickles: say which unpickler would run."""
    if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt"):
        raise Refusal(rel, "is a legacy weights/constants blob, which torch deserializes "
                           f"with torch.load(weights_only=False) {PICKLE_WHY}")
    if rel.startswith("data/constants/custom_obj_"):
        raise Refusal(rel, "is a custom (TorchScript) object constant, which torch "
                           "unpickles with torch._C._pickle_load_obj")
    if rel.startswith("data/constants/opaque_obj_"):
        raise Refusal(rel, "is an opaque-object constant, which torch unpickles with "
                           f"pickle.loads {PICKLE_WHY}")


class ArchiveView:
    """An archive read through both zipfile and torch's zip reader, which must agree."""

    def __init__(self, fh: BinaryIO, zf: zipfile.ZipFile, entries: Entries):
        self.zf = zf
        self.entries = entries
        self.reader = _torch_reader(fh, entries.infos)

    def read(self, rel: str) -> bytes:
        """The bytes of a metadata entry (capped at MAX_METADATA_BYTES), read both ways."""
        info = self.entries.infos[rel]
        if info.file_size > MAX_METADATA_BYTES:
            raise Refusal(rel, f"is {info.file_size} bytes, too large for a metadata entry")
        try:
            via_zipfile = self.zf.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
                zlib.error) as e:
            raise Refusal(rel, f"cannot be read ({one_line(e, 120)})") from None
        try:
            via_torch = bytes(self.reader.get_record(rel))
        except Exception as e:  # c10::Error and friends
            raise Refusal(rel, f"cannot be read by torch's zip reader ({first_line(e)})") from None
        if via_zipfile != via_torch:
            raise Refusal(rel, "reads differently through torch's zip reader and zipfile "
                               "(ambiguous zip structure)")
        return via_torch

    def read_json(self, rel: str) -> Any:
        """A metadata entry parsed as UTF-8 JSON."""
        raw = self.read(rel)
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise Refusal(rel, "is not UTF-8 text") from None
        except (ValueError, RecursionError) as e:
            raise Refusal(rel, f"is not valid JSON ({one_line(e, 100)})") from None


def _torch_reader(fh: BinaryIO, infos: dict[str, zipfile.ZipInfo]):
    """torch's reader for ``fh``, once its record list and sizes match zipfile's."""
    fh.seek(0)
    try:
        reader = torch._C.PyTorchFileReader(fh)
        records = list(reader.get_all_records())
    except Exception as e:  # c10::Error and friends
        raise Refusal(None, f"cannot be read by torch's zip reader ({first_line(e)})") from None
    if set(records) != set(infos) or len(records) != len(infos):
        diff = sorted(set(records) ^ set(infos))
        raise Refusal(diff[0] if diff else None,
                      "is seen differently by torch's zip reader and by zipfile "
                      "(ambiguous zip structure)")
    for rel, info in infos.items():
        try:
            size = reader.get_record_size(rel)
        except Exception as e:
            raise Refusal(rel, f"cannot be read by torch's zip reader ({first_line(e)})") from None
        if size != info.file_size:
            raise Refusal(rel, "has a different size for torch's zip reader than in the "
                               "zip directory (ambiguous zip structure)")
    return reader
