"""Small networks in the style of the ones people actually train, for calibrating ``validate``.

The paper zoo (``paper_zoo.py``) holds the papers' toy CNNs, each built to exercise one case of
the analysis.  These are instead the architectures a federated-learning deployment would use,
scaled down so that one Inverting Gradients iteration stays well under a second on a CPU at
3x32x32:

* ``resnet8``        - ResNet-8 for CIFAR: 3x3 stem, three stages of widths 16/32/64 with one
  BasicBlock each (``examples/resnet.py``'s ``ResNet``), global average pooling, Linear;
* ``vgg_small``      - VGG-style ConvNet: (conv-ReLU-conv-ReLU-MaxPool) x 3 at widths 16/32/64,
  then one Linear;
* ``lenet_relu``     - LeNet-5 as it is usually trained today: ReLU and max pooling;
* ``mobilenet_se``   - MobileNetV2/V3-style inverted-residual blocks (1x1 expand, depthwise 3x3,
  squeeze-excitation gate ``x * sigmoid(fc(relu(fc(avgpool(x)))))``, 1x1 project, residual where
  shapes match), BatchNorm, global average pooling, Linear;
* ``mlp3``           - MLP 3072-512-256-classes with ReLU.

Every factory takes ``num_classes``, ``seed`` (the weight initialisation is drawn from it without
touching the global RNG) and ``trained_steps``: with ``trained_steps > 0`` the model is first
trained with that many SGD steps (momentum 0.9, batch 32) on seeded synthetic data (one smooth
random template per class plus noise; nothing is downloaded), in train mode so BatchNorm's
running statistics move, and returned in eval mode.  ``NAME_trained`` is ``NAME`` with
``trained_steps=20``.
"""
from __future__ import annotations

import importlib.util
import sys
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["resnet8", "vgg_small", "lenet_relu", "mobilenet_se", "mlp3",
           "resnet8_trained", "vgg_small_trained", "lenet_relu_trained", "mobilenet_se_trained",
           "mlp3_trained", "SqueezeExcite", "InvertedResidual", "MobileNetSE", "train_synthetic",
           "TRAINED_STEPS"]

TRAINED_STEPS = 20  # SGD steps behind the *_trained variants


def _resnet_module():
    """``examples/resnet.py`` loaded by path (``examples`` is not a package)."""
    name = "archscan_examples_resnet"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "resnet.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _seq(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


# --------------------------------------------------------------------------------------------
# training on synthetic data


def synthetic_batches(steps: int, num_classes: int, shape=(3, 32, 32), batch: int = 32, seed: int = 0):
    """``steps`` seeded batches ``(images in [0, 1], labels)``: a smooth template per class + noise."""
    gen = torch.Generator().manual_seed(10_000 + int(seed))
    c, h, w = shape
    coarse = torch.rand((num_classes, c, max(1, h // 8), max(1, w // 8)), generator=gen)
    templates = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    for _ in range(steps):
        labels = torch.randint(0, num_classes, (batch,), generator=gen)
        noise = 0.15 * torch.randn((batch, c, h, w), generator=gen)
        yield (templates[labels] + noise).clamp(0, 1), labels


def train_synthetic(model: nn.Module, steps: int, num_classes: int, seed: int = 0, lr: float = 0.05) -> nn.Module:
    """``steps`` SGD steps (momentum 0.9) of cross-entropy on :func:`synthetic_batches`; eval mode after."""
    if steps > 0:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        model.train()
        for x, y in synthetic_batches(steps, num_classes, seed=seed):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        for p in model.parameters():
            p.grad = None
    return model.eval()


def _build(make, num_classes: int, seed: int, trained_steps: int) -> nn.Module:
    """Construct with weights drawn from ``seed`` (global RNG untouched), then train if asked."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = make()
        train_synthetic(model, int(trained_steps), num_classes, seed)
    return model.eval()


# --------------------------------------------------------------------------------------------
# architectures


def resnet8(num_classes: int = 10, seed: int = 0, trained_steps: int = 0, **kw) -> nn.Module:
    """ResNet-8 for 3x32x32: stem 3->16 k3, stages 16/32/64 (one BasicBlock each; stages 2 and 3
    stride 2 with a 1x1 downsample), BatchNorm, GAP, Linear 64->classes; ~78k parameters."""
    resnet = _resnet_module()
    return _build(lambda: resnet.ResNet((16, 32, 64), (1, 1, 1), num_classes, imagenet_stem=False),
                  num_classes, seed, trained_steps)


def vgg_small(num_classes: int = 10, seed: int = 0, trained_steps: int = 0, **kw) -> nn.Module:
    """VGG-style: [conv3x3-ReLU-conv3x3-ReLU-MaxPool2] at widths 16, 32, 64 (32 -> 16 -> 8 -> 4),
    Flatten (1024), Linear -> classes; ~76k parameters."""
    def make():
        layers, cin = [], 3
        for i, w in enumerate((16, 32, 64), start=1):
            layers += [(f"conv{i}a", nn.Conv2d(cin, w, 3, padding=1)), (f"act{i}a", nn.ReLU()),
                       (f"conv{i}b", nn.Conv2d(w, w, 3, padding=1)), (f"act{i}b", nn.ReLU()),
                       (f"pool{i}", nn.MaxPool2d(2))]
            cin = w
        return _seq(*layers, ("flatten", nn.Flatten()), ("fc", nn.Linear(64 * 4 * 4, num_classes)))
    return _build(make, num_classes, seed, trained_steps)


def lenet_relu(num_classes: int = 10, seed: int = 0, trained_steps: int = 0, **kw) -> nn.Module:
    """LeNet-5 with ReLU and max pooling: conv 3->6 k5, ReLU, MaxPool2, conv 6->16 k5, ReLU,
    MaxPool2, fc 400-120-84-classes with ReLU; ~62k parameters."""
    def make():
        return _seq(
            ("conv1", nn.Conv2d(3, 6, 5)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(6, 16, 5)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(16 * 5 * 5, 120)), ("act3", nn.ReLU()),
            ("fc2", nn.Linear(120, 84)), ("act4", nn.ReLU()),
            ("fc3", nn.Linear(84, num_classes)))
    return _build(make, num_classes, seed, trained_steps)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))``, the fcs as 1x1 convs."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand (BN, ReLU), depthwise 3x3 (BN, ReLU), SE, 1x1 project (BN), + x when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.ReLU()
        self.dw = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.ReLU()
        self.se = SqueezeExcite(hidden, max(4, hidden // 4))
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.expand(x)))
        out = self.se(self.act2(self.bn2(self.dw(out))))
        out = self.bn3(self.project(out))
        return x + out if self.residual else out


class MobileNetSE(nn.Module):
    """Stem conv 3->16 k3 stride 2 (BN, ReLU), inverted-residual SE blocks, GAP, Linear."""

    def __init__(self, num_classes: int, blocks=((16, 16, 1), (16, 24, 2), (24, 24, 1), (24, 32, 2))):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.ReLU()
        self.blocks = nn.Sequential(*[InvertedResidual(a, b, s) for a, b, s in blocks])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(blocks[-1][1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.bn(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def mobilenet_se(num_classes: int = 10, seed: int = 0, trained_steps: int = 0, **kw) -> nn.Module:
    """MobileNet-style for 3x32x32: stem 3->16 k3 s2 (16x16, as MobileNets' strided stem),
    inverted-residual SE blocks 16->16 (s1, residual), 16->24 (s2), 24->24 (s1, residual),
    24->32 (s2; 4x4), expansion 4, GAP, Linear; ~33k parameters."""
    return _build(lambda: MobileNetSE(num_classes), num_classes, seed, trained_steps)


def mlp3(num_classes: int = 10, seed: int = 0, trained_steps: int = 0, **kw) -> nn.Module:
    """MLP 3072-512-256-classes with ReLU (bias everywhere); ~1.7M parameters."""
    def make():
        return _seq(("flatten", nn.Flatten()), ("fc1", nn.Linear(3 * 32 * 32, 512)), ("act1", nn.ReLU()),
                    ("fc2", nn.Linear(512, 256)), ("act2", nn.ReLU()), ("fc3", nn.Linear(256, num_classes)))
    return _build(make, num_classes, seed, trained_steps)


def _trained(factory):
    def trained(num_classes: int = 10, seed: int = 0, trained_steps: int = TRAINED_STEPS, **kw) -> nn.Module:
        return factory(num_classes=num_classes, seed=seed, trained_steps=trained_steps, **kw)
    trained.__name__ = trained.__qualname__ = f"{factory.__name__}_trained"
    trained.__doc__ = f"``{factory.__name__}`` after {TRAINED_STEPS} SGD steps on seeded synthetic data."
    return trained


resnet8_trained = _trained(resnet8)
vgg_small_trained = _trained(vgg_small)
lenet_relu_trained = _trained(lenet_relu)
mobilenet_se_trained = _trained(mobilenet_se)
mlp3_trained = _trained(mlp3)
