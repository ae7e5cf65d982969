"""Small image classifiers from the gradient-leakage literature, plus structural test cases.

Every factory has the signature ``NAME(num_classes=10, **kw) -> nn.Module`` and builds a model
that traces with ``torch.fx.symbolic_trace``.  Inputs are 3x32x32 (CIFAR-sized) unless a docstring
says otherwise; ``examples/manifest.toml`` lists each model's input shape and expected verdict.

The docstrings count, in the terms of ``docs/theory.md`` section 1, the unknowns of each layer's
input against the rank of its system ``U_i = [W; K]`` (forward rows W, gradient rows K).  Numbers
marked "exact" were checked by generic rank modulo a prime on random weights and gradients; the
others follow from the counting rules (a stride-1 zero-padded conv with F >= C output channels, or
a "valid" conv with F*Ho*Wo >= C*H*W and every pixel covered, has full column rank generically).
None of the activations used below is identity-like, so pull-back rows add nothing.

Models are written in the style of the papers' test networks (Chen & Campbell 2021/2022 "COPA";
Zhu & Blaschko 2021 "R-GAP"; Eltaras et al. 2024 "R-CONV"); widths and paddings were chosen here so
that each model exercises one case of the analysis, not copied from the papers' code.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

__all__ = [
    "cnn3_c1", "cnn_c2", "cnn_c3", "cnn_c4", "cnn_narrow", "cnn_partial",
    "lenet_rgap", "lenet5", "cnn6", "cnn6_d", "mlp2", "cnn_relu", "cnn_relu_wide",
    "cnn_bn_pool", "cnn_depthwise", "cnn_concat", "cnn_concat_joint",
]


def _seq(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    """nn.Sequential with readable module paths (``conv1``, ``act1``, ``fc`` ...)."""
    return nn.Sequential(OrderedDict(layers))


# --------------------------------------------------------------------------------------------
# Chen & Campbell style small CNNs (COPA, arXiv 2111.10178; hybrid attack, arXiv 2210.13231)
# --------------------------------------------------------------------------------------------

def cnn3_c1(num_classes: int = 10, **kw) -> nn.Module:
    """Chen & Campbell (2021) style two-conv LeakyReLU CNN "C1"; input 3x32x32.

    conv1 3->6 k3 s1 p0 (32 -> 30), LeakyReLU(0.2); conv2 6->3 k4 s2 p0 (30 -> 14), LeakyReLU(0.2);
    Flatten (588); Linear(588, num_classes) with bias.

    - fc: input (588) leaks on its own through the bias gradient.
    - conv2: unknowns 6*30*30 = 5400; W rows 3*14*14 = 588, rank(K) = 6*rank(K_c) = 6*48 = 288,
      overlap 3^2 = 9 -> rank 867, deficiency 4533 (exact).  Deficient.
    - conv1: blocked (its g and z need conv2's input).  Image: not determined -> RESISTANT.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 6, 3, stride=1, padding=0)), ("act1", nn.LeakyReLU(0.2)),
        ("conv2", nn.Conv2d(6, 3, 4, stride=2, padding=0)), ("act2", nn.LeakyReLU(0.2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(3 * 14 * 14, num_classes)),
    )


def cnn_c2(num_classes: int = 10, **kw) -> nn.Module:
    """Chen & Campbell (2021) style tanh CNN "C2"; input 3x32x32.

    conv1 3->12 k3 s1 p1, tanh; conv2 12->12 k3 s1 p1, tanh; Flatten (12288); Linear with bias.
    Padding 1 keeps 32x32 so every conv has at least as many forward rows as unknowns.

    - conv2: unknowns 12*32*32 = 12288 = W rows (square zero-padded conv, generically invertible);
      K adds 12*108 more rows -> determined.
    - conv1: unknowns 3072; W rows 12*1024 = 12288 -> determined.
    tanh is invertible, so z and g are known at every layer -> LEAKS.
    (With padding 0 instead, conv2 would be deficient: 9408 + 1296 - 144 = 10560 < 10800.)
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 12, 3, stride=1, padding=1)), ("act1", nn.Tanh()),
        ("conv2", nn.Conv2d(12, 12, 3, stride=1, padding=1)), ("act2", nn.Tanh()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(12 * 32 * 32, num_classes)),
    )


def cnn_c3(num_classes: int = 10, **kw) -> nn.Module:
    """Chen & Campbell (2021) style sigmoid CNN "C3", three "valid" convs; input 3x32x32.

    conv1 3->8 k3 s1 p0 (30), conv2 8->16 k3 s1 p0 (28), conv3 16->32 k3 s1 p0 (26), sigmoid after
    each; Flatten (21632); Linear with bias.  Widths grow so that forward rows alone outnumber the
    unknowns at every layer (stride 1, every pixel covered):

    - conv3: unknowns 16*28*28 = 12544 <= W rows 32*26*26 = 21632 -> determined.
    - conv2: unknowns 8*30*30 = 7200 <= W rows 16*28*28 = 12544 -> determined.
    - conv1: unknowns 3*32*32 = 3072 <= W rows 8*30*30 = 7200 -> determined.
    sigmoid is invertible -> LEAKS.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 8, 3)), ("act1", nn.Sigmoid()),
        ("conv2", nn.Conv2d(8, 16, 3)), ("act2", nn.Sigmoid()),
        ("conv3", nn.Conv2d(16, 32, 3)), ("act3", nn.Sigmoid()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(32 * 26 * 26, num_classes)),
    )


def cnn_c4(num_classes: int = 10, **kw) -> nn.Module:
    """Chen & Campbell (2021) style softplus CNN "C4", four convs; input 3x32x32.

    conv1 3->16 k4 s2 p1 (16), conv2 16->32 k3 s1 p1 (16), conv3 32->32 k4 s2 p1 (8),
    conv4 32->32 k3 s1 p1 (8), Softplus after each; Flatten (2048); Linear with bias.

    - conv4: unknowns 32*8*8 = 2048 = W rows (square) -> determined.
    - conv3: unknowns 32*16*16 = 8192 but only 2048 W rows; the gradient rows carry it: each of
      the 4 residue blocks of K_c has 32 filters * 2*2 taps = 128 rows over 8*8 = 64 pixels, so
      rank(K_c) = 256 = H*W (exact) and rank(K) = 32*256 = 8192 -> determined by K alone.
    - conv2: unknowns 16*16*16 = 4096 <= W rows 8192 -> determined.
    - conv1: unknowns 3072; W rows 16*256 = 4096, rank(K) = 3*256 -> rank 3072 (exact).
    softplus is invertible -> LEAKS.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 16, 4, stride=2, padding=1)), ("act1", nn.Softplus()),
        ("conv2", nn.Conv2d(16, 32, 3, stride=1, padding=1)), ("act2", nn.Softplus()),
        ("conv3", nn.Conv2d(32, 32, 4, stride=2, padding=1)), ("act3", nn.Softplus()),
        ("conv4", nn.Conv2d(32, 32, 3, stride=1, padding=1)), ("act4", nn.Softplus()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(32 * 8 * 8, num_classes)),
    )


def cnn_narrow(num_classes: int = 10, **kw) -> nn.Module:
    """Deliberately resistant CNN: two stride-2 convs with two filters each; input 3x32x32.

    conv1 3->2 k4 s2 p1 (16), LeakyReLU(0.2); conv2 2->2 k4 s2 p1 (8), LeakyReLU(0.2);
    Flatten (128); Linear with bias.  (Chen & Campbell's point: few filters after a stride.)

    - conv2: unknowns 2*16*16 = 512; W rows 2*64 = 128, rank(K) = 2*32 = 64, overlap 4
      -> rank 188, deficiency 324 (exact).  Deficient.
    - conv1: blocked (and would itself be deficient: 3072 unknowns vs ~600 rows).
    Image not determined -> RESISTANT.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 2, 4, stride=2, padding=1)), ("act1", nn.LeakyReLU(0.2)),
        ("conv2", nn.Conv2d(2, 2, 4, stride=2, padding=1)), ("act2", nn.LeakyReLU(0.2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(2 * 8 * 8, num_classes)),
    )


def cnn_partial(num_classes: int = 10, **kw) -> nn.Module:
    """Only the first layer is deficient (Chen & Campbell's COPA case); input 3x32x32.

    conv1 3->4 k4 s2 p1 (16), LeakyReLU(0.2); conv2 4->16 k3 s1 p1 (16), LeakyReLU(0.2);
    Flatten (4096); Linear with bias.

    - conv2: unknowns 4*16*16 = 1024 <= W rows 16*256 = 4096 -> determined (exact).
    - conv1: g and z known; unknowns 3072, W rows 4*256 = 1024, rank(K) = 3*64 = 192,
      overlap 16 -> rank 1200, deficiency 1872 (exact).
    The image is known up to a 1872-dimensional null space (1200 of 3072 directions) -> PARTIAL.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 4, 4, stride=2, padding=1)), ("act1", nn.LeakyReLU(0.2)),
        ("conv2", nn.Conv2d(4, 16, 3, stride=1, padding=1)), ("act2", nn.LeakyReLU(0.2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(16 * 16 * 16, num_classes)),
    )


# --------------------------------------------------------------------------------------------
# LeNet variants
# --------------------------------------------------------------------------------------------

def lenet_rgap(num_classes: int = 10, **kw) -> nn.Module:
    """R-GAP (Zhu & Blaschko 2021) LeNet-style CNN with sigmoid; input 3x32x32.

    conv1 3->12 k5 s2 p2 (16), conv2 12->12 k5 s2 p2 (8), conv3 12->12 k5 s1 p2 (8), sigmoid after
    each; Flatten (768); Linear with bias.

    - conv3: unknowns 12*64 = 768 = W rows, and rank(K_c) = 64 -> determined (exact).
    - conv2: unknowns 12*16*16 = 3072; W rows 768, rank(K) = 12*240 = 2880, overlap 144
      -> rank 3072, determined (exact; margin 432).
    - conv1: unknowns 3072; W rows 12*256 = 3072, rank(K) = 3*300 = 900 -> determined (exact).
    sigmoid is invertible -> LEAKS (R-GAP's fully reconstructable case).
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 12, 5, stride=2, padding=2)), ("act1", nn.Sigmoid()),
        ("conv2", nn.Conv2d(12, 12, 5, stride=2, padding=2)), ("act2", nn.Sigmoid()),
        ("conv3", nn.Conv2d(12, 12, 5, stride=1, padding=2)), ("act3", nn.Sigmoid()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(12 * 8 * 8, num_classes)),
    )


def lenet5(num_classes: int = 10, **kw) -> nn.Module:
    """Classic LeNet-5 (LeCun et al. 1998) with tanh and average pooling, for 3x32x32 input.

    conv1 3->6 k5 (28), tanh, AvgPool 2 (14); conv2 6->16 k5 (10), tanh, AvgPool 2 (5);
    Flatten (400); fc1 400->120, tanh; fc2 120->84, tanh; fc3 84->num_classes (all with bias).
    (The original used 1x32x32 digits; three channels here so it shares the CIFAR input.)

    - fc1/fc2/fc3: each input leaks through its own bias gradient, so the 16x5x5 pooled map leaks.
    - pool2 averages *after* tanh: 400 averages of 1600 unknown tanh outputs, and neither tanh^-1
      nor tanh' can be applied per element -> the chain breaks; conv2 and conv1 are blocked.
    Image not determined -> RESISTANT (gradient matching may bridge the pool; archscan's
    closed-form chain does not).
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 6, 5)), ("act1", nn.Tanh()), ("pool1", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("act2", nn.Tanh()), ("pool2", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * 5 * 5, 120)), ("act3", nn.Tanh()),
        ("fc2", nn.Linear(120, 84)), ("act4", nn.Tanh()),
        ("fc3", nn.Linear(84, num_classes)),
    )


# --------------------------------------------------------------------------------------------
# R-GAP's CNN6 and its rank-deficient variant CNN6-d
# --------------------------------------------------------------------------------------------

def _cnn6(width2: int, num_classes: int) -> nn.Sequential:
    act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
    return _seq(
        ("conv1", nn.Conv2d(3, 12, 4, stride=2, padding=2)), ("act1", act()),        # 12x17x17
        ("conv2", nn.Conv2d(12, width2, 3, stride=2, padding=1)), ("act2", act()),  # w2x9x9
        ("conv3", nn.Conv2d(width2, 36, 3, stride=1, padding=1)), ("act3", act()),  # 36x9x9
        ("conv4", nn.Conv2d(36, 36, 3, stride=1, padding=1)), ("act4", act()),      # 36x9x9
        ("conv5", nn.Conv2d(36, 64, 3, stride=2, padding=1)), ("act5", act()),      # 64x5x5
        ("conv6", nn.Conv2d(64, 128, 3, stride=1, padding=1)), ("act6", act()),     # 128x5x5
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(128 * 5 * 5, num_classes)),
    )


def cnn6(num_classes: int = 10, **kw) -> nn.Module:
    """R-GAP (Zhu & Blaschko 2021) style CNN6: six convs, LeakyReLU(0.2); input 3x32x32.

    conv1 3->12 k4 s2 p2 (17), conv2 12->36 k3 s2 p1 (9), conv3 36->36 k3 p1, conv4 36->36 k3 p1,
    conv5 36->64 k3 s2 p1 (5), conv6 64->128 k3 p1 (5); Flatten (3200); Linear with bias.

    - conv6: unknowns 64*25 = 1600 <= W rows 3200 -> determined.
    - conv5: unknowns 36*81 = 2916; rank(K_c) = 25+20+20+16 = 81 = H*W -> K alone determines
      (exact).
    - conv4, conv3: square 36x9x9 convs -> determined.
    - conv2: unknowns 12*17*17 = 3468; W rows 36*81 = 2916, rank(K) = 12*244, overlap 36^2
      -> rank 3468, determined (exact).
    - conv1: unknowns 3072 <= W rows 12*289 = 3468 -> determined (exact).
    LeakyReLU is invertible -> LEAKS.
    """
    return _cnn6(36, num_classes)


def cnn6_d(num_classes: int = 10, **kw) -> nn.Module:
    """R-GAP's rank-deficient CNN6-d: CNN6 with conv2 cut to 20 filters; input 3x32x32.

    Identical to ``cnn6`` except conv2 is 12->20 k3 s2 p1 on the 12x17x17 output of conv1 and
    conv3 is 20->36.  This is theory.md's worked example:

    - conv6..conv3: determined as in ``cnn6`` (conv3: 1620 unknowns <= 2916 W rows, exact).
    - conv2: unknowns 3468; naive count 1620 + 2160 = 3780 looks sufficient, but
      rank = 1620 + 12*164 - 20^2 = 3188 (exact): deficiency 280.
    - conv1: blocked (z_1 and g_1 need conv2's input).
    Strictly the image is blocked -> RESISTANT; R-GAP's min-norm recursion still gives a
    recognisable but inexact image, so a score that credits approximate recovery may sit near the
    PARTIAL boundary.
    """
    return _cnn6(20, num_classes)


# --------------------------------------------------------------------------------------------
# Other structural cases
# --------------------------------------------------------------------------------------------

def mlp2(num_classes: int = 10, **kw) -> nn.Module:
    """Two-layer MLP (Phong et al. 2017 leak); input 3x32x32 flattened to 3072.

    fc1 3072->256 with bias, ReLU, fc2 256->num_classes.
    fc1's input is the image: x = (dL/dW1)[j, :] / (dL/db1)[j] for any hidden unit j with a non-zero
    bias gradient (any active ReLU unit) -> the image leaks exactly -> LEAKS.
    """
    return _seq(
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(3 * 32 * 32, 256)), ("act1", nn.ReLU()),
        ("fc2", nn.Linear(256, num_classes)),
    )


def cnn_relu(num_classes: int = 10, **kw) -> nn.Module:
    """Small ReLU CNN (R-CONV's setting, too few filters); input 3x32x32.

    conv1 3->32 k3 s1 p1 (32), ReLU; conv2 32->32 k3 s2 p1 (16), ReLU; Flatten (8192); Linear.

    - conv2: unknowns 32*32*32 = 32768; forward rows only where the ReLU is active (~4096 of
      8192), rank(K_c) <= 32+64+64+128 = 288 so rank(K) <= 9216 -> rank <= ~13300: deficient.
    - conv1: blocked (the ReLU pattern of its output is unknown).  -> RESISTANT.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 32, 3, stride=1, padding=1)), ("act1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 32, 3, stride=2, padding=1)), ("act2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(32 * 16 * 16, num_classes)),
    )


def cnn_relu_wide(num_classes: int = 10, **kw) -> nn.Module:
    """ReLU CNN wide enough for R-CONV's gradient-row attack (Eltaras et al. 2024); 3x32x32.

    conv1 3->64 k4 s2 p1 (16), ReLU; conv2 64->64 k4 s2 p1 (8), ReLU; Flatten (4096); Linear.

    - conv2: unknowns 64*16*16 = 16384.  Each residue block of K_c has 64 filters * 4 taps = 256
      rows over 64 pixels; with half of g zeroed by the ReLU it stays full rank (exact, rho=0.5):
      rank(K) = 64*256 = 16384 -> determined from gradient rows alone.
    - conv1: unknowns 3072; ~8192 active forward rows plus K -> determined (exact, rho=0.5).
    ReLU derivative is known from the output, so the chain survives -> LEAKS (with high
    probability over activation patterns).
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 64, 4, stride=2, padding=1)), ("act1", nn.ReLU()),
        ("conv2", nn.Conv2d(64, 64, 4, stride=2, padding=1)), ("act2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(64 * 8 * 8, num_classes)),
    )


def cnn_bn_pool(num_classes: int = 10, **kw) -> nn.Module:
    """Conv-BN-ReLU-MaxPool then global average pooling: pooling breaks the chain; 3x32x32.

    conv1 3->16 k3 p1, BatchNorm2d, ReLU, MaxPool 2 (16); conv2 16->32 k3 p1, ReLU;
    AdaptiveAvgPool2d(1); Flatten (32); Linear with bias.

    - fc: its 32-d input (the pooled features) leaks.
    - avgpool after ReLU: 32 averages of 32*16*16 = 8192 unknown ReLU outputs; z and g of conv2
      cannot be formed -> conv2 blocked; max pooling (unknown arg-max) and train-mode BatchNorm
      (2 unknowns per channel at batch 1) block conv1 further.  -> RESISTANT.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 16, 3, padding=1)), ("bn1", nn.BatchNorm2d(16)),
        ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("act2", nn.ReLU()),
        ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(32, num_classes)),
    )


def cnn_depthwise(num_classes: int = 10, **kw) -> nn.Module:
    """Reflect padding, dilated depthwise conv and pointwise conv (MobileNet-style); 3x32x32.

    conv1 3->8 k3 p1 padding_mode='reflect'; dw 8->8 k3 groups=8 dilation=2 p2; pw 8->16 k1;
    LeakyReLU(0.2) after each; Flatten (16384); Linear with bias.

    - pw: unknowns 8*1024 = 8192 <= W rows 16*1024 (a 16x8 matrix per pixel) -> determined.
    - dw: unknowns 8192 = W rows; W is block diagonal, 8 single-channel dilated 32x32 convs,
      each generically invertible (exact); K has only 9 rows per channel (groups!) -> determined
      by W alone.
    - conv1: reflect padding folds border columns onto interior pixels; 3072 unknowns,
      W rows 8192 -> rank 3072 (exact, with the fold).
    LeakyReLU invertible -> LEAKS.
    """
    return _seq(
        ("conv1", nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")), ("act1", nn.LeakyReLU(0.2)),
        ("dw", nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)), ("act2", nn.LeakyReLU(0.2)),
        ("pw", nn.Conv2d(8, 16, 1)), ("act3", nn.LeakyReLU(0.2)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(16 * 32 * 32, num_classes)),
    )


class _TwoBranch(nn.Module):
    """Two conv branches on the same input, concatenated on channels, then a merge conv."""

    def __init__(self, branch_a: nn.Conv2d, branch_b: nn.Conv2d, merge: nn.Conv2d,
                 fc_in: int, num_classes: int):
        super().__init__()
        self.branch_a = branch_a
        self.act_a = nn.LeakyReLU(0.2)
        self.branch_b = branch_b
        self.act_b = nn.LeakyReLU(0.2)
        self.merge = merge
        self.act_m = nn.LeakyReLU(0.2)
        self.fc = nn.Linear(fc_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act_a(self.branch_a(x))
        b = self.act_b(self.branch_b(x))
        h = torch.cat([a, b], dim=1)
        h = self.act_m(self.merge(h))
        return self.fc(torch.flatten(h, 1))


def cnn_concat(num_classes: int = 10, **kw) -> nn.Module:
    """Inception-style torch.cat of two conv branches; each branch alone reveals the image; 3x32x32.

    branch_a 3->8 k3 p1, branch_b 3->8 k5 p2 (both 32x32), LeakyReLU(0.2); cat -> 16x32x32;
    merge 16->16 k3 p1, LeakyReLU; Flatten (16384); Linear with bias.

    - merge: unknowns 16384 = W rows (square) -> determined; the cat splits into both branches.
    - branch_a / branch_b: each has 3072 unknowns <= 8192 W rows -> each determines the image.
    -> LEAKS.
    """
    return _TwoBranch(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 5, padding=2),
                      nn.Conv2d(16, 16, 3, padding=1), 16 * 32 * 32, num_classes)


def cnn_concat_joint(num_classes: int = 10, **kw) -> nn.Module:
    """torch.cat of two stride-2 branches that determine the image only *together*; 3x32x32.

    branch_a 3->8 k4 s2 p1, branch_b 3->8 k3 s2 p1 (both 16x16), LeakyReLU(0.2); cat -> 16x16x16;
    merge 16->32 k3 p1, LeakyReLU; Flatten (8192); Linear with bias.

    - merge: unknowns 16*256 = 4096 <= W rows 8192 -> determined; gives both branch outputs.
    - the image feeds two layers, so its system stacks both: branch_a alone has rank 2368
      (deficiency 704), branch_b alone rank 2200 (deficiency 872), stacked rank 3072 (all exact).
    -> LEAKS, but only for an analysis that stacks the equations of every consumer of a tensor;
    taking the best single path gives PARTIAL.
    """
    return _TwoBranch(nn.Conv2d(3, 8, 4, stride=2, padding=1),
                      nn.Conv2d(3, 8, 3, stride=2, padding=1),
                      nn.Conv2d(16, 32, 3, padding=1), 32 * 16 * 16, num_classes)
