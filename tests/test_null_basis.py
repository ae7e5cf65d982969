"""The chain view's null space: the subset eigensolver (given the exact rank) against the full
eigendecomposition, on random conv geometries; and the full-rank shortcut."""
import numpy as np
import pytest
from archscan_kernels import ConvGeometry

from archscan.analysis.scores import null_basis


class _System:
    def __init__(self, geom):
        self.geometry, self.unknowns = geom, geom.C * geom.H * geom.W


@pytest.mark.parametrize("C, H, F, k, s, p", [(3, 8, 2, 3, 1, 0), (1, 10, 1, 3, 2, 0), (2, 7, 1, 2, 2, 0),
                                              (3, 9, 4, 3, 3, 1), (1, 12, 2, 5, 1, 2), (1, 8, 2, 2, 1, 0),
                                              (2, 6, 8, 3, 2, 1), (2, 8, 4, 2, 2, 1)])
@pytest.mark.parametrize("rows", ["W", "K", "WK"])
def test_subset_null_space_is_the_full_one(C, H, F, k, s, p, rows):
    geom = ConvGeometry(C=C, H=H, W=H, F=F, kh=k, kw=k, sh=s, sw=s, ph=p, pw=p)
    system = _System(geom)
    full = null_basis(system, rows, seed=3)
    rank = system.unknowns - full.shape[1]
    fast = null_basis(system, rows, seed=3, rank=rank)
    assert fast.shape == full.shape
    assert np.allclose(fast @ fast.T, full @ full.T, atol=1e-8)   # the same subspace


def test_full_rank_needs_no_eigendecomposition():
    geom = ConvGeometry(C=1, H=6, W=6, F=8, kh=3, kw=3, sh=1, sw=1, ph=1, pw=1)
    assert null_basis(_System(geom), "WK", seed=0, rank=36).shape == (36, 0)


def test_the_subset_path_is_taken_when_the_null_space_is_small(monkeypatch):
    import archscan.analysis.scores as scores
    geom = ConvGeometry(C=2, H=8, W=8, F=2, kh=2, kw=2, sh=1, sw=1, ph=0, pw=0)   # 128 unknowns, 18 null
    system = _System(geom)
    full = null_basis(system, "WK", seed=1)
    calls = []
    real = scores.scipy.linalg.eigh
    monkeypatch.setattr(scores.scipy.linalg, "eigh", lambda *a, **k: calls.append(k) or real(*a, **k))
    fast = null_basis(system, "WK", seed=1, rank=system.unknowns - full.shape[1])
    assert calls and "subset_by_index" in calls[0] and 0 < full.shape[1] < system.unknowns // 4
    assert np.allclose(fast @ fast.T, full @ full.T, atol=1e-8)
