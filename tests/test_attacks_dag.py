"""Closed-form attacks beyond plain chains: ill-conditioned grouped convs, concatenated branches
(R-GAP on a DAG) and APRIL on a tiny ViT-like model (float64, CPU, batch of one)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archscan.validate.attacks import get_attack, make_target
from archscan.validate.metrics import psnr

torch.set_num_threads(1)
F64 = torch.float64


def _image(shape=(3, 8, 8), seed=0):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, shape[0], shape[1] // 2, shape[2] // 2), generator=gen, dtype=F64)
    return F.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False).clamp(0, 1)


def _psnr(name, model, x, label=2, **settings):
    rec = get_attack(name, **settings).reconstruct(make_target(model, x, torch.tensor([label])))
    assert rec.skipped is None, rec.skipped
    return float(psnr(rec.images, x).min())


def test_rgap_depthwise_dilated_reflect():
    """Reflect-padded conv, dilated depthwise conv (square, ill-conditioned per channel), 1x1 conv."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(0.2),
                          nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4), nn.LeakyReLU(0.2),
                          nn.Conv2d(4, 8, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 64, 10))
    x = _image(seed=1)
    rec = get_attack("rgap").reconstruct(make_target(model, x, torch.tensor([2])))
    assert float(psnr(rec.images, x).min()) >= 100
    dw = next(layer for layer in rec.info["layers"][0] if layer["layer"] == "2")
    assert dw["solver_iterations"] == 0 and dw["residual"] < 1e-10  # per-group dense solves


class _Cat(nn.Module):
    def __init__(self, a, b, merge, fc_in):
        super().__init__()
        self.a, self.b, self.merge = a, b, merge
        self.act = nn.LeakyReLU(0.2)
        self.fc = nn.Linear(fc_in, 5)

    def forward(self, x):
        h = torch.cat([self.act(self.a(x)), torch.tanh(self.b(x))], dim=1)
        return self.fc(torch.flatten(self.act(self.merge(h)), 1))


def test_rgap_concatenated_branches():
    """Each stride-1 branch determines the image; stride-2 branches only together (joint rows)."""
    torch.manual_seed(4)
    wide = _Cat(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 5, padding=2), nn.Conv2d(8, 8, 3, padding=1), 8 * 64)
    joint = _Cat(nn.Conv2d(3, 4, 4, 2, 1), nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(8, 16, 3, padding=1), 16 * 16)
    x = _image(seed=2)
    assert _psnr("rgap", wide, x) >= 100
    assert _psnr("rgap", joint, x) >= 100
    assert "chain" in get_attack("hybrid").applicable(joint, (3, 8, 8))  # hybrid stays chain-only


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(192, 5)

    def forward(self, x):
        return self.fc(torch.flatten(x + self.conv(x), 1))


class _TinyViT(nn.Module):
    """Patch conv (k2 s2 on 8x8: 16 tokens of width 16), class token, pos embedding, one pre-norm block."""

    def __init__(self, dim=16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 17, dim))
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, x):
        t = torch.flatten(self.patch(x), 2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.size(0), -1, -1), t], dim=1) + self.pos
        q, k, v = self.qkv(self.norm1(t)).chunk(3, dim=-1)
        t = t + self.proj(torch.softmax(q @ k.transpose(-2, -1) * 0.25, dim=-1) @ v)
        t = t + self.fc2(F.gelu(self.fc1(self.norm2(t))))
        return self.head(self.norm(t)[:, 0])


def test_april_recovers_tiny_vit():
    torch.manual_seed(5)
    model = _TinyViT().eval()
    x = _image(seed=3)
    assert get_attack("april").applicable(model, (3, 8, 8)) is None
    assert _psnr("april", model, x) >= 100
    assert get_attack("rgap").applicable(model) is not None


def test_applicable_reasons():
    torch.manual_seed(6)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(144, 10))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(192, 10))
    april = get_attack("april")
    assert "no positional embedding" in april.applicable(cnn) and "Tanh" in april.applicable(cnn)
    assert "no Conv2d reads the image" in april.applicable(mlp)
    assert "not a chain" in get_attack("rgap").applicable(_Residual())
    assert "not a chain" in get_attack("rgap").applicable(_Residual(), (3, 8, 8))


def test_chain_is_a_one_path_dag_from_the_shared_trace():
    """Chains and DAGs are one walk of the one fx trace (archscan/model/fxgraph.py): a chain model
    gives the same steps, shapes and head either way, and no attack traces the model itself."""
    import re
    from pathlib import Path

    from archscan.validate.attacks.chain import build_chain
    from archscan.validate.attacks.dag import build_dag

    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3, 2, 1),
                          nn.Tanh(), nn.Flatten(), nn.Linear(64, 10), nn.Identity()).double()
    chain, dag = build_chain(model, (3, 8, 8)), build_dag(model, (3, 8, 8))
    fields = lambda s: (s.kind, s.name, s.act, s.params, s.in_shape, s.out_shape)  # noqa: E731
    assert [fields(n.step) for n in dag.nodes] == [fields(s) for s in chain.steps]
    assert [n.inputs for n in dag.nodes] == [[i - 1] for i in range(len(chain.steps))]
    assert dag.head == chain.head == 5
    validate = Path(__file__).resolve().parents[1] / "archscan" / "validate"
    tracers = [str(p) for p in validate.rglob("*.py")
               if re.search(r"symbolic_trace|ShapeProp|fx\.Tracer|\.passes\.shape_prop", p.read_text())]
    assert not tracers, f"trace through archscan.model.fxgraph, not again in {tracers}"
