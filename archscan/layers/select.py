"""Selections: an output that is some entries of its input.

``x[:, :8]``, ``x[:, 0]``, ``narrow`` and ``select`` read a set of entries; ``chunk``, ``split``,
``unbind`` and ``tensor_split`` cut the input into pieces that their tuple items read.  Each node
records the flat entries (at batch 1) of the tensor it selects from -- found by applying the
same selection to a tensor of entry numbers -- so that the flow (``flow.Part``) can combine all
the selections of one tensor: a channel slice before the head determines only the kept channels,
and two halves of a channel split together determine the whole tensor.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from archscan.layers.base import LayerKind, is_parameter, traced_shape
from archscan.layers.flow import PART, PIECES

_WHY = "a selection of entries: the closed-form attacks take reshapes only"


def _resolved(v):
    """An argument with the traced graph's numbers put in (``x[:, : x.shape[1] // 2]``)."""
    if isinstance(v, fx.Node):
        if "value" in v.meta:
            return v.meta["value"]      # a number of the traced graph, or an index buffer
        val = v.meta.get("val")
        if isinstance(val, (int, torch.SymInt)):
            return int(val)
        raise ValueError(f"index {v.name} is not a number fixed at trace time")
    if isinstance(v, slice):
        return slice(_resolved(v.start), _resolved(v.stop), _resolved(v.step))
    if isinstance(v, (list, tuple)):
        return type(v)(_resolved(i) for i in v)
    return v


def _ids(node) -> torch.Tensor:
    shape = traced_shape(node)
    if shape is None:
        raise ValueError("selects from something that is not a tensor")
    return torch.arange(int(np.prod(shape)), dtype=torch.int64).reshape(shape)


def _aten_slice(ids, dim=0, start=None, end=None, step=1):
    return ids[(slice(None),) * (dim % ids.dim()) + (slice(start, end, step),)]


def _getitem(ids, index):
    return ids[index]


def _entries(select):
    """params of a selection replayed on entry numbers by ``select(ids, *args)``."""
    def params(module, args, kwargs):
        source = args[0]
        if traced_shape(source) is None:   # an item of a tuple: which piece, when the tuple is a split
            return {"item": _resolved(args[1])}
        ids = _ids(source)
        picked = select(ids, *(_resolved(a) for a in args[1:]), **{k: _resolved(v) for k, v in kwargs.items()})
        return {"entries": picked.reshape(-1).numpy(), "universe": ids.numel(), "_data_arg": 0}
    return params


_INDEX_ENTRIES = _entries(lambda ids, indices: ids[tuple(indices)])


def _aten_index(module, args, kwargs):
    """``aten.index(x, [None, idx])`` (advanced indexing): the entries when the index tensors are
    numbers of the trace; a gather from a learned tensor by an index buffer the program does not
    carry (LeViT's attention biases in a .pt2) reads a constant, whose entries do not matter."""
    try:
        return _INDEX_ENTRIES(module, args, kwargs)
    except ValueError:
        if is_parameter(args[0]):
            return {}
        raise


def _pieces(split):
    """params of a split replayed on entry numbers: the entries of every piece."""
    def params(module, args, kwargs):
        ids = _ids(args[0])
        out = split(ids, *(_resolved(a) for a in args[1:]), **{k: _resolved(v) for k, v in kwargs.items()})
        return {"pieces": [p.reshape(-1).numpy() for p in out], "universe": ids.numel(), "_data_arg": 0}
    return params


KINDS = (
    # x[...] on a tensor (entries), or on a tuple (an item: a split's piece, else the tuple's value)
    LayerKind("getitem", "select", PART, functions=(operator.getitem,), methods=("__getitem__",),
              params=_entries(_getitem), attack_why=_WHY),
    LayerKind("slice", "select", PART, aten=("aten.slice",), params=_entries(_aten_slice), attack_why=_WHY),
    LayerKind("index", "select", PART, aten=("aten.index",), params=_aten_index, attack_why=_WHY),
    LayerKind("narrow", "select", PART, functions=(torch.narrow,), methods=("narrow",), aten=("aten.narrow",),
              params=_entries(torch.narrow), attack_why=_WHY),
    LayerKind("select", "select", PART, functions=(torch.select,), methods=("select",), aten=("aten.select",),
              params=_entries(torch.select), attack_why=_WHY),
    LayerKind("split", "select", PIECES, functions=(torch.split,), methods=("split", "split_with_sizes"),
              aten=("aten.split", "aten.split_with_sizes"), params=_pieces(torch.split), attack_why=_WHY),
    LayerKind("chunk", "select", PIECES, functions=(torch.chunk,), methods=("chunk",), aten=("aten.chunk",),
              params=_pieces(torch.chunk), attack_why=_WHY),
    LayerKind("unbind", "select", PIECES, functions=(torch.unbind,), methods=("unbind",), aten=("aten.unbind",),
              params=_pieces(torch.unbind), attack_why=_WHY),
    LayerKind("tensor_split", "select", PIECES, functions=(torch.tensor_split,), methods=("tensor_split",),
              aten=("aten.tensor_split",), params=_pieces(torch.tensor_split), attack_why=_WHY),
)
