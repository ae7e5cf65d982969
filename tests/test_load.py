"""Model construction is seeded: the same --seed builds the same weights whatever ran before."""
from pathlib import Path

import pytest
import torch

from archscan.errors import InputError
from archscan.model.load import load_model

ZOO = str(Path(__file__).resolve().parents[1] / "examples" / "paper_zoo.py")


def _weights(seed: int) -> list:
    return [p.detach().clone() for p in load_model(f"{ZOO}:cnn_relu", seed=seed).module.parameters()]


def test_same_seed_same_weights_whatever_ran_before():
    first = _weights(3)
    torch.rand(1000)  # a caller drawing in between must not change what the factory builds
    again = _weights(3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other = _weights(4)
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_loading_leaves_the_callers_random_state_alone():
    torch.manual_seed(11)
    expected = torch.rand(5)
    torch.manual_seed(11)
    _weights(0)
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.parametrize("spec", ["os:system", "subprocess:run", "builtins:eval", "torch:load"])
def test_a_spec_must_name_a_model_or_a_factory_of_its_module(spec):
    with pytest.raises(InputError, match="not an nn.Module"):
        load_model(spec, {"command": "touch /tmp/archscan-should-not-exist"})
    assert not Path("/tmp/archscan-should-not-exist").exists()


def test_factories_classes_and_instances_of_the_module_load():
    assert load_model("torch.nn:Identity").module is not None           # an nn.Module subclass
    assert load_model(f"{ZOO}:cnn_relu").module is not None              # a factory defined there
