"""The chain view's null space: the subset eigensolver (given the exact rank) against the full
eigendecomposition, on random conv geometries; the full-rank shortcut, and the rank the chain
hands it (that of the rows it builds)."""
from pathlib import Path

import numpy as np
import pytest
from archscan_kernels import ConvGeometry

from archscan.analysis.scores import null_basis

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("rows", ["W", "K", "W+K", "W(active)+K", "W(active)"])
def test_the_chain_passes_the_rank_of_the_rows_it_builds_not_the_usable_rank(rows):
    """cnn6_d's conv1 reads an image whose own W rows have full rank while the attacker forms only
    2792 of them: the rank handed to ``null_basis`` is that of the full rows (no eigensolve at
    all), and the usable rank's shortfall is the isotropic share."""
    from archscan import config
    from archscan.analysis.scores import rows_rank
    from archscan.analysis.systems import build_system
    from archscan.model.graph import build_graph
    from archscan.model.load import load_model
    from archscan.model.trace import trace_model
    from archscan.pipeline import scan
    spec = str(ROOT / "examples" / "paper_zoo.py") + ":cnn6_d"
    loaded = load_model(spec, {}, None, 0)
    g = build_graph(trace_model(loaded, (3, 32, 32)).nodes)
    node = next(g.nodes[n]["layer"] for n in g.nodes if g.nodes[n]["layer"].module_path == "conv1")
    system = build_system(g, node, 2, 0, 0.5)
    r = system.ranks
    expected = {"W": r.forward, "K": r.gradient}.get(rows.replace("(active)", ""), r.stack)
    assert rows_rank(system, rows) == (expected.value if expected.exact else None)
    assert rows_rank(None, rows) is None
    report = scan(spec, config.ScanOptions(input_shape=(3, 32, 32), local="off"))
    assert report.scores.prediction_method.startswith("dense null space (0 directions) + isotropic share of 280")
