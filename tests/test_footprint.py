"""The activation count that guards a scan's memory: shape arithmetic on the fx graph (the fast
path, no fake tensors and so no dynamo import) against the fake-tensor forward (the reference),
on every model of the examples zoo; and the fallback for ops without an arithmetic rule."""
import importlib
import inspect
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from archscan.model.footprint import activation_values, arithmetic_values, fake_values

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _zoo():
    for module in ("paper_zoo", "real_style", "resnet", "vit"):
        z = importlib.import_module(f"examples.{module}")
        for name, fn in inspect.getmembers(z, inspect.isfunction):
            returns = inspect.signature(fn).return_annotation
            if (not name.startswith("_") and fn.__module__ == z.__name__ and not name.endswith("_trained")
                    and "Module" in str(returns) and not inspect.signature(fn).parameters.get("model")):
                yield f"{module}:{name}", fn


@pytest.mark.parametrize("name, factory", list(_zoo()), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("shape", [(3, 32, 32)])
def test_arithmetic_count_is_the_fake_tensor_count(name, factory, shape):
    torch.manual_seed(0)
    model = factory()
    counted = arithmetic_values(model, shape)
    if counted is None:      # an op without a rule here (attention): the reference alone decides
        assert activation_values(model, shape) == fake_values(model, shape)
        return
    assert counted == fake_values(model, shape)


def test_the_paper_cnns_take_the_arithmetic_path():
    z = importlib.import_module("examples.paper_zoo")
    for name in ("cnn6_d", "cnn6", "lenet5", "mlp2", "cnn_bn_pool", "cnn_depthwise", "cnn_concat"):
        assert arithmetic_values(getattr(z, name)(), (3, 32, 32)) is not None, name


class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        y = y * torch.softmax(y.mean((2, 3), keepdim=True), 1)   # mean and softmax: no rule here
        return self.head(y.mean((2, 3)))


def test_an_op_without_a_rule_falls_back_to_fake_tensors():
    net = _Gated()
    assert arithmetic_values(net, (3, 8, 8)) is None
    assert activation_values(net, (3, 8, 8)) == fake_values(net, (3, 8, 8)) > 4 * 64


def test_an_input_too_small_for_a_window_has_no_arithmetic_count():
    net = nn.Sequential(nn.Conv2d(3, 4, 5), nn.Flatten(), nn.Linear(4, 2))
    assert arithmetic_values(net, (3, 3, 3)) is None
