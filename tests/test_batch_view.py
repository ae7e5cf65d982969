"""The optimisation view at batch B > 1: a client shares the gradient of the loss summed over its B
images, and the attacker must recover the B images jointly -- the operator's point is the whole
batch; checked against an explicit Jacobian of the summed gradient, and end to end."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from archscan.analysis import spectrum as sp
from archscan.config import ScanOptions

from test_spectrum import FIXED

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def explicit_batch_gram(model, images: np.ndarray, labels) -> np.ndarray:
    """A = JᵀJ, J = d(gradient of the summed loss)/d(all B images), by plain autograd."""
    net = copy.deepcopy(model).double().eval()
    params = [p for p in net.parameters() if p.requires_grad]

    def flat_grad(x):
        loss = F.cross_entropy(net(x), torch.tensor(labels), reduction="sum")
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, create_graph=True)])

    x = torch.tensor(images, dtype=F64)
    J = torch.autograd.functional.jacobian(flat_grad, x).reshape(-1, x.numel())
    return (J.T @ J).numpy()


@pytest.mark.parametrize("name", sorted(FIXED))
def test_batch_operator_matches_the_explicit_jacobian(name):
    factory, shape = FIXED[name]
    model = factory()
    rng = np.random.default_rng(4)
    images = rng.random((6, *shape))                # 2 points of B = 3 images
    labels = [0, 1, 2, 3, 4, 5]
    op = sp.GramOperator(model, images, labels, dtype=F64, batch=3)
    assert op.n == 3 * int(np.prod(shape)) and len(op.points) == 2
    V = torch.tensor(rng.standard_normal((2, op.n)))
    got = op(V, point_rows=np.array([0, 1])).numpy()
    for i in range(2):
        A = explicit_batch_gram(model, images[3 * i:3 * i + 3], labels[3 * i:3 * i + 3])
        np.testing.assert_allclose(got[i], A @ V[i].numpy(), rtol=1e-9, atol=1e-12 * np.abs(A).max())


def test_batch_one_is_the_single_image_operator():
    factory, shape = FIXED["conv_tanh"]
    model = factory()
    images = np.random.default_rng(5).random((2, *shape))
    a = sp.GramOperator(model, images, [1, 2], dtype=F64)
    b = sp.GramOperator(model, images, [1, 2], dtype=F64, batch=1)
    V = torch.tensor(np.random.default_rng(6).standard_normal((2, a.n)))
    assert torch.equal(a(V, point_rows=np.array([0, 1])), b(V, point_rows=np.array([0, 1])))


def test_a_batch_that_does_not_split_is_refused():
    factory, shape = FIXED["mlp"]
    with pytest.raises(ValueError, match="do not split into batches of 2"):
        sp.GramOperator(factory(), np.zeros((3, *shape)), None, batch=2)


def test_scan_at_batch_four_predicts_less_than_at_batch_one():
    from archscan.pipeline import scan
    spec = f"{ROOT}/examples/paper_zoo.py:lenet5"
    rep = {b: scan(spec, ScanOptions(input_shape=(3, 32, 32), num_classes=10, batch_size=b)).to_dict()["scores"]
           for b in (1, 4)}
    one, four = rep[1]["optimisation"], rep[4]["optimisation"]
    assert four["status"] == "ran" and four["batch_size"] == 4 and four["directions"]["of"] == 4 * 3 * 32 * 32
    assert four["leakage_score"] < one["leakage_score"] and four["predicted_psnr"] < one["predicted_psnr"]


@pytest.mark.parametrize("name, pooled", [("cnn_bn_pool", "gap"), ("lenet5", None), ("cnn6_d", None)])
def test_global_average_pool_heads_are_found(name, pooled):
    from archscan.analysis.local import global_pool_of
    from archscan.model.graph import build_graph
    from archscan.model.load import load_model
    from archscan.model.trace import trace_model
    loaded = load_model(f"{ROOT}/examples/paper_zoo.py:{name}", {}, 10, 0)
    assert global_pool_of(build_graph(trace_model(loaded, (3, 32, 32)).nodes)) == pooled


def test_real_style_resnet_head_is_a_global_pool_and_vgg_is_not():
    from archscan.analysis.local import global_pool_of
    from archscan.model.graph import build_graph
    from archscan.model.load import load_model
    from archscan.model.trace import trace_model
    found = {m: global_pool_of(build_graph(trace_model(load_model(f"{ROOT}/examples/real_style.py:{m}", {}, 10, 0),
                                                      (3, 32, 32)).nodes)) for m in ("resnet8", "vgg_small")}
    assert found == {"resnet8": "avgpool", "vgg_small": None}


def test_a_pooled_head_that_cannot_tell_the_image_from_its_mirror_is_predicted_unaligned():
    from archscan.pipeline import scan
    s = scan(f"{ROOT}/examples/paper_zoo.py:cnn_bn_pool", ScanOptions(input_shape=(3, 32, 32), num_classes=10))
    scores = s.to_dict()["scores"]
    opt = scores["optimisation"]
    assert opt["global_pool"] == "gap" and opt["symmetry"]["ambiguous"]
    assert opt["psnr_unaligned"] > scores["predicted_psnr"] and any("mirror image" in n for n in opt["notes"])
    assert scores["verdict"] != "RESISTANT"          # the cap moves the PSNR, never the verdict
