"""Legitimate models for the .pt2 safety tests, and the session fixture that exports them.

Each is a kind of program torch.export writes for real models: parameters, buffers, lifted
constants, symbolic batch sizes (sym ops and guards_code), control flow, keyword inputs and
grad-mode regions.  The loader must load every one exactly as torch.export.load does.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export import Dim


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


class ResBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.layers = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())

    def forward(self, x):
        return self.layers(self.act(self.bn(self.conv(x)) + x))


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(x - self.mean)


class WithConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.tensor([1.0, 2.0, 3.0])  # plain tensor attribute -> lifted constant
        self.scale = 0.5                          # Python float -> inlined as_float
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x * self.k * self.scale)


class DynamicNet(nn.Module):
    """Dynamic batch: symbolic sizes, sym ops and guards_code in the JSON."""

    def forward(self, x):
        if x.shape[0] > 4:
            return x.view(x.shape[0] // 2, -1) * 2
        return x + 1


class CondNet(nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))


class KwargsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x, *, y=None, scale: float = 1.0):
        return self.fc(x) + y * scale


class NoGradNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        with torch.no_grad():
            z = self.fc(x)
        return z + x


# name -> (factory, args, kwargs, dynamic_shapes, run_decompositions)
LEGIT = {
    "conv": (ConvNet, (torch.randn(1, 3, 8, 8),), {}, None, False),
    "conv_aten": (ConvNet, (torch.randn(1, 3, 8, 8),), {}, None, True),
    "resblock_eval": (lambda: ResBlock().eval(), (torch.randn(1, 4, 6, 6),), {}, None, False),
    "resblock_train": (ResBlock, (torch.randn(2, 4, 6, 6),), {}, None, False),
    "buffer": (WithBuffer, (torch.randn(1, 3, 4, 4),), {}, None, False),
    "constant": (WithConstant, (torch.randn(2, 3),), {}, None, False),
    "dynamic": (DynamicNet, (torch.randn(8, 6),), {}, {"x": {0: Dim.AUTO}}, False),
    "dynamic_batch": (ConvNet, (torch.randn(2, 3, 8, 8),), {},
                      ({0: Dim("batch", min=1, max=64)},), True),
    "cond": (CondNet, (torch.randn(3),), {}, None, False),
    "kwargs": (KwargsNet, (torch.randn(2, 3),), {"y": torch.randn(2, 3), "scale": 2.0}, None,
               True),
    "no_grad": (NoGradNet, (torch.randn(2, 3),), {}, None, False),
}


_LEGIT_CACHE: dict = {}


@pytest.fixture(scope="session")
def legit(tmp_path_factory):
    """name -> (path, args, kwargs); each exported and saved once per session.

    Several test modules import this fixture, and pytest keeps a session fixture per module that
    defines it, so the archives are cached here to be built only once.
    """
    if not _LEGIT_CACHE:
        _LEGIT_CACHE.update(_export_all(tmp_path_factory.mktemp("legit")))
    return _LEGIT_CACHE


def _export_all(d: Path) -> dict:
    out = {}
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        warnings.simplefilter("ignore")
        for name, (factory, args, kwargs, dyn, decompose) in LEGIT.items():
            ep = torch.export.export(factory(), args, kwargs, dynamic_shapes=dyn)
            if decompose:
                ep = ep.run_decompositions()
            path = d / f"{name}.pt2"
            torch.export.save(ep, str(path))
            out[name] = (path, args, kwargs)
    return out
