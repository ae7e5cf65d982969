"""The candidate changes ``archscan suggest`` tries, each a small, named edit of the model or of the
client's training setting, with a documented size (``cost``) so that "the smallest change" is defined.

Architecture edits work on a deep copy of the built model (the same seeded weights everywhere the
edit does not reach); ``archscan.suggest.adapt`` then fits the layers downstream of a shape change.
Setting edits change the scan options only.  Sizes (docs/suggest.md):

    remove a bias ............ 1      ReLU for an invertible activation ... 2
    BatchNorm in train mode .. 2      batch size x2 / x4 / x8 ............. 2 / 3 / 4
    stride 2 at a conv ....... 3      2x2 max-pool after a conv ........... 3
    half the filters of a conv 4
plus the fraction of the model's parameters the edit removes (a tie-break between layers); the sizes
live in ``config.SUGGEST_COST`` and ``config.SUGGEST_BATCH_STEPS``.
"""
from __future__ import annotations

import copy
from dataclasses import replace

from torch import nn

from archscan.report.suggestions import Edit

__all__ = ["EDITORS", "Edit", "apply"]


def apply(edit: Edit, module: nn.Module | None, options):
    """(edited copy of the model, options) for one candidate; the inputs are never modified."""
    if not edit.architecture:
        return module, _setting(edit, options)
    model = copy.deepcopy(module)
    EDITORS[edit.kind](model, edit)
    return model, options


def _setting(edit: Edit, options):
    if edit.kind == "batch-size":
        return replace(options, batch_size=int(edit.value))
    return replace(options, bn_mode="train")


def _no_bias(model: nn.Module, edit: Edit) -> None:
    model.get_submodule(edit.target).register_parameter("bias", None)


def _activation(model: nn.Module, edit: Edit) -> None:
    for path, sub in list(model.named_modules()):
        if path and type(sub).__name__ == edit.value:
            _set(model, path, nn.ReLU())


def _stride(model: nn.Module, edit: Edit) -> None:
    conv = model.get_submodule(edit.target)
    conv.stride = tuple(2 * s for s in conv.stride)


def _pool(model: nn.Module, edit: Edit) -> None:
    _set(model, edit.target, nn.Sequential(model.get_submodule(edit.target), nn.MaxPool2d(2)))


def _filters(model: nn.Module, edit: Edit) -> None:
    conv = model.get_submodule(edit.target)
    keep = conv.out_channels // 2
    conv.weight = nn.Parameter(conv.weight.detach()[:keep].clone())
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[:keep].clone())
    conv.out_channels = keep


def _set(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


EDITORS = {"no-bias": _no_bias, "activation": _activation, "stride": _stride, "pool": _pool, "filters": _filters}
