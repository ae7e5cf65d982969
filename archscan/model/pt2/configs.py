"""The payload entries: weights / constants configs and the example inputs.

A config maps each parameter, buffer or constant to its tensor file and tells torch how to read
it.  ``use_pickle`` (or a ``custom_obj_`` / ``opaque_obj_`` path) makes torch unpickle the file,
and a declared shape is allocated even when the file is empty, so only plain tensors of a
bounded size pass.  The example inputs are the one payload torch reads with ``torch.load``; it
is tried here with ``weights_only=True`` first, because torch retries with
``weights_only=False`` when that fails.
"""
from __future__ import annotations

import io
import re
import warnings
from typing import Any

from archscan.model.pt2.capture import quiet
from archscan.model.pt2.errors import PICKLE_WHY, Refusal, first_line, one_line, quoted
from archscan.model.pt2.guard import ORIGINAL_TORCH_LOAD, strict_safe_globals
from archscan.model.pt2.names import check_fqn

#: (folder, tensor-file prefix) for each kind of config
_LAYOUT = {"weights": ("data/weights/", "weight_"), "constants": ("data/constants/", "tensor_")}


def dtype_sizes() -> dict[int, int]:
    """Bytes per element for every serialized dtype code torch knows."""
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE
    return {k: v.itemsize for k, v in _SERIALIZE_TO_TORCH_DTYPE.items()}


def check_payload_config(rel: str, cfg: Any, kind: str, entries: dict,
                         sizes: dict[int, int], max_bytes: int) -> None:
    """Check a ``<model>_weights_config.json`` or ``<model>_constants_config.json``.

    Parameters
    ----------
    rel : str
        The config's entry name (for messages).
    cfg : Any
        Its parsed JSON.
    kind : {"weights", "constants"}
        Which config it is.
    entries : dict
        The archive's entries by relative name (a tensor file must be one of them).
    sizes : dict of int to int
        Bytes per element by dtype code (:func:`dtype_sizes`).
    max_bytes : int
        No declared tensor may be larger.
    """
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict) \
            or set(cfg) - {"config"}:
        raise Refusal(rel, "is not a payload config ({\"config\": {...}})")
    for fqn, meta in cfg["config"].items():
        _check_payload_entry(rel, fqn, meta, kind, entries)
        _check_tensor_meta(rel, fqn, meta.get("tensor_meta"), sizes, max_bytes)


def _check_payload_entry(rel: str, fqn: Any, meta: Any, kind: str, entries: dict) -> None:
    """The entry's name, how torch would read it (never unpickled) and its tensor file."""
    why = check_fqn(fqn)
    if why:
        raise Refusal(rel, f"entry {quoted(fqn)} {why}")
    if not isinstance(meta, dict):
        raise Refusal(rel, f"entry {quoted(fqn)} is not an object")
    _refuse_unpickling(rel, fqn, meta)
    base, prefix = _LAYOUT[kind]
    path_name = meta.get("path_name")
    if not (isinstance(path_name, str) and re.fullmatch(prefix + r"\d+", path_name)):
        raise Refusal(rel, f"entry {quoted(fqn)} points at {quoted(path_name)}, not a "
                           f"{prefix}<n> tensor file")
    if base + path_name not in entries:
        raise Refusal(rel, f"entry {quoted(fqn)} points at missing entry {base}{path_name}")
    if not isinstance(meta.get("is_param", False), bool):
        raise Refusal(rel, f"entry {quoted(fqn)} has a non-boolean is_param")


def _refuse_unpickling(rel: str, fqn: str, meta: dict) -> None:
    """use_pickle must be exactly false, and the path must not name an object file."""
    use_pickle = meta.get("use_pickle")
    if use_pickle is not False:
        if use_pickle:
            raise Refusal(rel, f"marks {quoted(fqn)} use_pickle {PICKLE_WHY}")
        raise Refusal(rel, f"entry {quoted(fqn)} has use_pickle={use_pickle!r} (expected false)")
    path_name = meta.get("path_name")
    if isinstance(path_name, str) and path_name.startswith("custom_obj_"):
        raise Refusal(rel, f"makes {quoted(fqn)} a custom (TorchScript) object, which torch "
                           "unpickles with torch._C._pickle_load_obj")
    if isinstance(path_name, str) and path_name.startswith("opaque_obj_"):
        raise Refusal(rel, f"makes {quoted(fqn)} an opaque object, which torch unpickles "
                           f"with pickle.loads {PICKLE_WHY}")


def _check_tensor_meta(rel: str, fqn: str, tm: Any, sizes: dict[int, int],
                       max_bytes: int) -> None:
    """A plain tensor: known dtype, concrete sizes/strides/offset, a device, bounded bytes."""
    if not isinstance(tm, dict):
        raise Refusal(rel, f"entry {quoted(fqn)} has no tensor_meta (only plain tensors "
                           "are allowed)")
    dtype = tm.get("dtype")
    if type(dtype) is not int or dtype not in sizes:
        raise Refusal(rel, f"entry {quoted(fqn)} has an unknown dtype {dtype!r}")
    shape = _ints(rel, fqn, tm.get("sizes"), "sizes", nonneg=True)
    _ints(rel, fqn, tm.get("strides"), "strides", nonneg=False)
    _ints(rel, fqn, [tm.get("storage_offset")], "storage_offset", nonneg=True)
    dev = tm.get("device")
    if not (isinstance(dev, dict) and isinstance(dev.get("type"), str)
            and re.fullmatch(r"[a-z_]+", dev["type"])
            and (dev.get("index") is None or type(dev.get("index")) is int)):
        raise Refusal(rel, f"entry {quoted(fqn)} has a malformed device")
    # torch allocates the declared shape even for an empty file: bound it before it does
    numel = 1
    for s in shape:
        numel *= s
        if numel * sizes[dtype] > max_bytes:
            raise Refusal(rel, f"entry {quoted(fqn)} declares a tensor larger than the "
                               f"{max_bytes}-byte cap")


def _ints(rel: str, fqn: str, seq: Any, what: str, nonneg: bool) -> list[int]:
    """A list of ``{"as_int": n}`` (concrete, not symbolic) as ints, or a Refusal."""
    if not isinstance(seq, list):
        raise Refusal(rel, f"entry {quoted(fqn)} has malformed {what}")
    out = []
    for s in seq:
        v = s.get("as_int") if isinstance(s, dict) and set(s) == {"as_int"} else None
        if type(v) is not int or (nonneg and v < 0) or abs(v) > 1 << 62:
            raise Refusal(rel, f"entry {quoted(fqn)} has {what} that are not concrete integers")
        out.append(v)
    return out


def check_sample_inputs(rel: str, raw: bytes) -> None:
    """The example inputs must load with ``torch.load(weights_only=True)`` as a tuple or dict."""
    if len(raw) == 0:
        return
    try:
        with quiet(), strict_safe_globals(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = ORIGINAL_TORCH_LOAD(io.BytesIO(raw), weights_only=True)
    except Exception as e:
        raise Refusal(rel, f"does not load with torch.load(weights_only=True) "
                           f"({_weights_only_reason(e)}); torch would retry with "
                           "weights_only=False, which runs code") from None
    if not isinstance(obj, (tuple, dict)):
        raise Refusal(rel, f"holds a {type(obj).__name__}, not the (args, kwargs) tuple "
                           "torch.export.save writes")


def _weights_only_reason(e: BaseException) -> str:
    """The useful part of torch's weights_only error: which global or opcode it met."""
    text = str(e)
    m = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", text)
    if m:
        return f"it references {m.group(1)}"
    m = re.search(r"Unsupported operand \d+|Unsupported class [^\s]+", text)
    if m:
        return one_line(m.group(0), 120)
    return f"{type(e).__name__}: {first_line(e)}"[:160]
