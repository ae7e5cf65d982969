"""What the trace does beyond one fx pass: a library's fx leaf (a function fx may not enter) is
traced through by torch.export when that leaves fewer unknown ops; ops computed from constants
alone are constants; new tensors shaped like an activation are constants; random draws are not."""
import torch
from torch import fx, nn

from archscan.config import ScanOptions
from archscan.pipeline import scan


def _leafy(x):
    """An op sequence fx sees as one call (torchvision does this for shifted-window attention)."""
    return torch.roll(x, shifts=1, dims=2) * 2.0


fx.wrap("_leafy")


def _spec(model, name):
    import sys
    holder = type(sys)(name)
    holder.net = model.eval()
    sys.modules[name] = holder
    return f"{name}:net"


class _Leaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 36, 3)

    def forward(self, x):
        return self.fc(_leafy(torch.tanh(self.conv(x))).flatten(1))


def test_an_fx_leaf_is_traced_through_by_torch_export():
    assert any(n.op == "call_function" and n.target is _leafy for n in fx.symbolic_trace(_Leaf()).graph.nodes)
    torch.manual_seed(0)
    rep = scan(_spec(_Leaf(), "trace_fallback_leaf"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert rep["model"]["trace_method"] == "export" and rep["coverage"]["unsupported"] == 0
    assert [l["name"] for l in rep["layers"]] == ["conv", "fc"] and rep["image"]["status"] == "determined"


class _Mask(nn.Module):
    """An additive mask built from the activation's shape, then an unknown op on constants only."""

    def __init__(self, noise: bool = False):
        super().__init__()
        self.noise = noise
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(4, 1, 1))
        self.fc = nn.Linear(4 * 36, 3)

    def forward(self, x):
        y = torch.tanh(self.conv(x))
        mask = y.new_zeros(y.shape[1:])                     # a constant of y's shape
        mask = torch.special.expit(mask + torch.erf(self.scale))   # no rule for erf/expit: folded, constants only
        if self.noise:
            mask = mask + torch.randn_like(mask)            # a random draw: never a known constant
        return self.fc((y + mask).flatten(1))


def test_ops_on_constants_fold_and_random_draws_do_not():
    torch.manual_seed(0)
    rep = scan(_spec(_Mask(), "trace_fallback_mask"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    folded = [n for n in rep["nodes"] if n["kind"] == "constant" and n["outcome"] == "ignored" and "computed from" in n["reason"]]
    assert rep["coverage"]["unsupported"] == 0 and len(folded) == 2
    assert any(n["kind"] == "fresh" for n in rep["nodes"])
    assert rep["image"]["status"] == "determined"      # the mask is known: y = (y + mask) - mask
    noisy = scan(_spec(_Mask(noise=True), "trace_fallback_noise"), ScanOptions(input_shape=(1, 6, 6), local="off")).to_dict()
    assert noisy["coverage"]["unsupported"] >= 1       # randn_like stays a named unknown op
