"""Hand-written ResNet-18 (He et al. 2016) in CIFAR and ImageNet form, and a tiny ResNet for tests.

Expected analysis (docs/theory.md): the Linear head with bias leaks its input, the globally
average-pooled feature vector, but AdaptiveAvgPool2d(1) follows a ReLU, so the last feature map
cannot be recovered per element (z and g of the last conv are unknown): every conv is blocked and
the image is not determined -> RESISTANT.  Train-mode BatchNorm at batch 1 adds two unknowns per
channel and the ReLUs drop forward rows, which only strengthens that.  Residual skips would raise
the rank if the chain reached them (theory.md "Pooling, BatchNorm, residuals").
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["BasicBlock", "ResNet", "resnet18_cifar", "resnet18_imagenet", "resnet_tiny"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus identity (or 1x1 conv + BN downsample) skip, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + skip)


class ResNet(nn.Module):
    """Stem, stages of BasicBlocks (first block of each later stage strides 2), GAP, Linear."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int,
                 imagenet_stem: bool):
        super().__init__()
        w0 = widths[0]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(3, w0, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, w0, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet_stem else nn.Identity()
        stages = []
        cin = w0
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(cin, w, stride)] + [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        # named layer1..layerN as in the usual ResNet module paths
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"layer{i}", stage)
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):  # fixed at construction: unrolled by fx
            x = getattr(self, f"layer{i}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18_cifar(num_classes: int = 10, **kw) -> nn.Module:
    """ResNet-18 for 3x32x32 (3x3 stride-1 stem, no max pool); ~11.2M parameters.

    Expected RESISTANT: GAP after the last ReLU breaks the chain (the 512-d pooled vector leaks
    through the head's bias, nothing below it does).
    """
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, imagenet_stem=False)


def resnet18_imagenet(num_classes: int = 1000, **kw) -> nn.Module:
    """ResNet-18 for 3x224x224 (7x7 stride-2 stem + 3x3 stride-2 max pool); ~11.7M parameters.

    Expected RESISTANT for the same reason as ``resnet18_cifar``; the max pool adds an unknown
    arg-max pattern as well.  Slow to analyse.
    """
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, imagenet_stem=True)


def resnet_tiny(num_classes: int = 10, **kw) -> nn.Module:
    """Two-stage ResNet (widths 8/16, one BasicBlock each) for 3x32x32, for fast tests.

    Stage 2's block has a 1x1 stride-2 downsample conv + BN.  Expected RESISTANT (GAP after ReLU).
    """
    return ResNet((8, 16), (1, 1), num_classes, imagenet_stem=False)
