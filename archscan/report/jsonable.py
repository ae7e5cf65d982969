"""Records <-> JSON values, driven by the records' own fields and type hints: the one edge where a
report becomes dicts (``to_json``) or is read back from them (``from_json``).

Field metadata a record may set: ``key`` (its JSON name when that is not a Python name, e.g.
``class``), ``omit_none`` (left out of the JSON when None) and ``flatten`` (a mapping whose entries
sit beside the record's own keys; on reading, every key the record does not name goes there).
"""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import lru_cache


class MissingField(ValueError):
    """A JSON value lacks a field its record requires; ``path`` names it (``scores.verdict``)."""

    def __init__(self, path: str):
        super().__init__(f"missing {path}")
        self.path = path


def to_json(value):
    """Dataclasses to dicts (in field order; a record with a ``__json__`` method writes itself),
    tuples to lists; everything else as it is."""
    if hasattr(value, "__json__") and not isinstance(value, type):
        return value.__json__()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("flatten"):
                out.update(to_json(item))
            elif not (item is None and f.metadata.get("omit_none")):
                out[f.metadata.get("key", f.name)] = to_json(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(cls, data, path: str = "", lenient: bool = False):
    """The record ``cls`` from its JSON dict.  ``lenient``: a missing field becomes None (a report
    written by an older archscan) instead of :class:`MissingField`."""
    if not isinstance(data, dict):
        raise MissingField(path or cls.__name__)
    hints, rest, kwargs, flat = _hints(cls), dict(data), {}, None
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key", f.name)
        if f.metadata.get("flatten"):
            flat = f.name
        elif key in rest:
            kwargs[f.name] = _value(hints[f.name], rest.pop(key), _join(path, key), lenient)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if not lenient:
                raise MissingField(_join(path, key))
            kwargs[f.name] = None
    if flat is not None:
        kwargs[flat] = rest
    return cls(**kwargs)


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _value(hint, data, path: str, lenient: bool):
    if data is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], data, path, lenient) if len(inner) == 1 else data
    if origin is tuple and isinstance(data, list):
        item = args[0] if args else typing.Any
        return tuple(_value(item, v, f"{path}[{i}]", lenient) for i, v in enumerate(data))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_json(hint, data, path, lenient)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    return data
