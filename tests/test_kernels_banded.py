"""archscan_kernels.banded: banded elimination mod p against the slow references, and the
spatially ordered stack instances it eliminates against the plain ones."""
import naive
import numpy as np
import pytest
from archscan_kernels.banded import _delay, banded_rank_mod_p
from archscan_kernels.conv_blocks import stack_builder
from archscan_kernels.geometry import ConvGeometry
from archscan_kernels.modp import PRIMES, rank_mod_p_naive
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels_modp import SETTINGS, low_rank_matrices


@settings(max_examples=naive.n_examples(200), **SETTINGS)
@given(low_rank_matrices(max_dim=90, max_rank=60))
def test_banded_rank_matches_naive_on_any_matrix(case):
    """Correct on any matrix (dense, sparse, duplicated rows, negative representatives)."""
    A, p, r = case
    got = banded_rank_mod_p(A.astype(np.float64), p)
    assert got == rank_mod_p_naive(A, p)
    assert got <= r


@settings(max_examples=naive.n_examples(60), **SETTINGS)
@given(low_rank_matrices(max_dim=60, max_rank=40), st.integers(0, 70))
def test_banded_cap_stops_at_the_cap(case, cap):
    A, p, _ = case
    full = rank_mod_p_naive(A, p)
    assert banded_rank_mod_p(A.astype(np.float64), p, cap=cap) == min(full, cap)


def test_delayed_reduction_survives_many_updates():
    """More updates per row than the delay allows: rows must be reduced on the way."""
    p = PRIMES[0]
    rng = np.random.default_rng(0)
    n = 3 * _delay(p) // 2 + 10                 # the last row is reduced by ~n pivots
    A = np.triu(rng.integers(1, p, (n, n))).astype(np.float64)
    A = np.vstack([A, rng.integers(0, p, (1, n)).astype(np.float64)])
    assert banded_rank_mod_p(A, p) == n


GEOMS = st.builds(
    lambda C, F, k, s, pad, H, W, mode: (C, H, W, F, k, k, s, s, pad, pad, 1, 1, 1, mode),
    st.integers(1, 3), st.integers(1, 5), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
    st.integers(3, 8), st.integers(3, 8), st.sampled_from(["zeros", "circular", "replicate"]))


def _spatial_permutations(geom, n_chan, n_w, n_k_rows):
    """Rows (f, u, v) -> (u, v, f) for W, K rows unchanged; columns (c, h, w) -> (h, w, c)."""
    nq = geom.Ho * geom.Wo
    rows = np.arange(n_w * nq).reshape(n_w, nq).T.reshape(-1)
    rows = np.concatenate([rows, n_w * nq + np.arange(n_k_rows)])
    cols = np.arange(n_chan * geom.H * geom.W).reshape(n_chan, -1).T.reshape(-1)
    return rows, cols


@settings(max_examples=naive.n_examples(80), **SETTINGS)
@given(GEOMS, st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_spatial_instance_is_the_plain_one_permuted(t, forward, masked, seed):
    try:
        geom = ConvGeometry(*t)
    except ValueError:
        return
    p = PRIMES[0]
    masks = None
    if masked:
        keep = np.random.default_rng(seed).random((geom.F, geom.Ho, geom.Wo)) < 0.5
        masks = (keep.reshape(-1), keep)
    kw = dict(forward=forward, masks=masks)
    plain = stack_builder(geom, geom.C, geom.F, geom.F, **kw)(np.random.default_rng(seed), p)
    spat = stack_builder(geom, geom.C, geom.F, geom.F, spatial=True, **kw)(np.random.default_rng(seed), p)
    n_w = geom.F if forward else 0
    n_k_rows = geom.F * geom.C * geom.kh * geom.kw
    rows, cols = _spatial_permutations(geom, geom.C, n_w, n_k_rows)
    if masks is not None and forward:
        keep_rows = np.concatenate([masks[0], np.ones(n_k_rows, bool)])
        position = np.cumsum(keep_rows) - 1     # plain keeps the kept rows in their own order
        rows = position[rows[keep_rows[rows]]]
    np.testing.assert_array_equal(spat, plain[rows][:, cols])
    want = rank_mod_p_naive(plain.astype(np.int64) % p, p)
    assert banded_rank_mod_p(spat.copy(), p) == want


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2-D"):
        banded_rank_mod_p(np.zeros(3), PRIMES[0])
    with pytest.raises(ValueError, match="prime"):
        banded_rank_mod_p(np.zeros((2, 2)), 2 ** 22)
