"""Local identifiability: the projected Jacobian rank equals the dense Jacobian's rank."""
import numpy as np
import pytest
import torch

from archscan.analysis.local import local_identifiability


def _dense_rank(model, image):
    model = model.double()
    params = dict(model.named_parameters())
    y = torch.tensor([0])

    def grads(x):
        loss = torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(params.values()), create_graph=True)])

    J = torch.autograd.functional.jacobian(grads, torch.as_tensor(image, dtype=torch.float64)[None])
    J = J.reshape(J.shape[0], -1).detach().numpy()
    s = np.linalg.svd(J, compute_uv=False)
    return int((s > 1e-8 * s[0]).sum())


@pytest.mark.parametrize("make", [
    lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(16, 3)),
    lambda: torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(216, 3)),
], ids=["narrow", "wide-relu"])
def test_projected_rank_matches_dense_jacobian(make):
    torch.manual_seed(0)
    model = make().eval()
    image = np.random.default_rng(0).random((1, 6, 6))
    res = local_identifiability(model, image, budget=60)
    assert res.skipped is None
    assert res.rank == _dense_rank(model, image)
    assert res.null_basis.shape == (36, 36 - res.rank)
    assert res.weak_basis.shape[1] >= res.null_basis.shape[1]


def test_budget_skips_cleanly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3)).eval()
    res = local_identifiability(model, np.zeros((1, 6, 6)), budget=0.0)
    assert res.skipped and "budget" in res.skipped and res.null_basis is None
