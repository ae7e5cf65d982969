"""The records of a traced chain model: one :class:`Step` per operation, and the :class:`Chain`."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Step:
    """One operation of a chain model.

    ``kind`` is ``"linear"``, ``"conv"``, ``"act"`` (element-wise, named by ``act`` with numeric
    ``params``) or ``"reshape"``; shapes exclude the batch dimension.
    """

    kind: str
    name: str = ""
    module: nn.Module | None = None
    act: str = "identity"
    params: tuple = ()
    node: object = None
    in_shape: tuple = ()
    out_shape: tuple = ()


@dataclass
class Chain:
    """A traced chain model: its steps and the index of the Linear head."""

    steps: list
    head: int
    input_shape: tuple
