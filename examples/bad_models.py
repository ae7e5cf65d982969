"""Models that archscan must reject cleanly (error-path tests); not listed in manifest.toml.

- ``data_dependent``: Python ``if`` on a tensor value; torch.fx.symbolic_trace raises a TraceError
  and torch.export fails on the data-dependent guard, so tracing must report an error.
- ``factory_raises``: the factory itself raises ``ValueError("bad width")``.
- ``text_model``: an nn.Embedding bag-of-words classifier taking int64 token ids of shape
  (1, 16); not an image model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["data_dependent", "factory_raises", "text_model"]


class _DataDependent(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 32 * 32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on data: untraceable
            x = self.conv(x)
        else:
            x = -self.conv(x)
        return self.fc(torch.flatten(x, 1))


def data_dependent(num_classes: int = 10, **kw) -> nn.Module:
    """3x32x32 CNN whose forward branches on ``x.sum() > 0`` (fx and torch.export both fail)."""
    return _DataDependent(num_classes)


def factory_raises(num_classes: int = 10, **kw) -> nn.Module:
    """A factory that fails before building anything."""
    raise ValueError("bad width")


class _TextModel(nn.Module):
    def __init__(self, vocab_size: int, dim: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(tokens).mean(dim=1))


def text_model(num_classes: int = 10, vocab_size: int = 1000, dim: int = 32, **kw) -> nn.Module:
    """Embedding + mean + Linear over int64 token ids of shape (1, 16): not an image model."""
    return _TextModel(vocab_size, dim, num_classes)
