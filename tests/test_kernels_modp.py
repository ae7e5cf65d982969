"""archscan_kernels.modp: the blocked mod-p rank against slow references.

References: ``rank_mod_p_naive`` (Python integers), ``naive.rank_mod_p_numpy`` (int64 row
reduction, another prime) and ``naive.rank_fraction`` (exact over Q).
"""
import naive
import numpy as np
import pytest
from archscan_kernels import modp
from archscan_kernels.modp import PANEL, PRIMES, rank_mod_p, rank_mod_p_naive
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def low_rank_matrices(draw, max_dim=160, max_rank=None, allow_big=True):
    """(A, p, structural rank bound): products of random factors, zero columns/rows, sparsity,
    duplicated rows, and entries over the whole field; wide and tall."""
    size = st.sampled_from([(0, 12), (0, max_dim), (PANEL - 2, max_dim)])
    lo_m, hi_m = draw(size)
    lo_n, hi_n = draw(size)
    m = draw(st.integers(min(lo_m, max_dim), max_dim if hi_m > max_dim else hi_m))
    n = draw(st.integers(min(lo_n, max_dim), max_dim if hi_n > max_dim else hi_n))
    event(f"min dim > {PANEL}" if min(m, n) > PANEL else "min dim <= 128")
    r = draw(st.integers(0, min(m, n, max_rank if max_rank is not None else max_dim)))
    p = draw(st.sampled_from(PRIMES + (3, 5, 7, 65537, 1048573)))
    kind = draw(st.sampled_from(["field", "small", "sparse"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "field":
        B, Cm = rng.integers(0, p, (m, r)), rng.integers(0, p, (r, n))
    elif kind == "small":
        B, Cm = rng.integers(-3, 4, (m, r)), rng.integers(-3, 4, (r, n))
    else:
        B = rng.integers(0, p, (m, r)) * (rng.random((m, r)) < 0.1)
        Cm = rng.integers(0, p, (r, n)) * (rng.random((r, n)) < 0.2)
    A = np.mod(B.astype(np.int64) @ Cm.astype(np.int64), p) if r else np.zeros((m, n), np.int64)
    if n and draw(st.booleans()):   # zero columns, including whole leading panels
        A[:, rng.random(n) < draw(st.floats(0, 1))] = 0
    if m > 1 and draw(st.booleans()):  # duplicated rows
        A[rng.integers(0, m, m // 3)] = A[rng.integers(0, m, m // 3)]
    if draw(st.booleans()):
        A = A - p * rng.integers(-2, 3, A.shape)   # same residues, other representatives
    return A, p, r


@settings(max_examples=naive.n_examples(250), **SETTINGS)
@given(low_rank_matrices(max_rank=40))
def test_rank_matches_naive_low_rank(case):
    """Sizes up to 160 (crossing the 128-column panel) with rank <= 40: Python reference."""
    A, p, r = case
    got = rank_mod_p(A, p)
    assert got == rank_mod_p_naive(A, p)
    assert got <= r


@settings(max_examples=naive.n_examples(60), **SETTINGS)
@given(low_rank_matrices(max_dim=300))
def test_rank_matches_numpy_reference_full_range(case):
    """Sizes up to 300 and any rank (two and three panels): int64 row-reduction reference."""
    A, p, r = case
    assert rank_mod_p(A, p) == naive.rank_mod_p_numpy(A, p)


@pytest.mark.parametrize("m,n,r", [(129, 129, 129), (300, 130, 128), (130, 300, 129),
                                   (257, 257, 200), (400, 260, 259), (128, 128, 127),
                                   (1, 500, 1), (500, 1, 1), (200, 200, 0)])
def test_panel_boundaries(m, n, r):
    rng = np.random.default_rng(m * 1000 + n + r)
    p = PRIMES[1]
    A = np.mod(rng.integers(0, p, (m, r)) @ rng.integers(0, p, (r, n)), p) if r else np.zeros((m, n))
    got = rank_mod_p(A, p)
    assert got == naive.rank_mod_p_numpy(A, p) == r


def test_rank_deficiency_only_after_first_panel():
    """Full rank in the first 128 columns, dependencies among the later ones."""
    rng = np.random.default_rng(1)
    p = PRIMES[0]
    A = rng.integers(0, p, (300, 200))
    A[:, 150:] = np.mod(A[:, 100:150] * 3 + A[:, :50], p)  # 50 dependent columns
    assert rank_mod_p(A, p) == naive.rank_mod_p_numpy(A, p) == 150


@settings(max_examples=naive.n_examples(80), **SETTINGS)
@given(low_rank_matrices(max_dim=24, max_rank=24))
def test_small_matrices_against_fractions(case):
    """Tiny integer matrices: rank mod p <= rank over Q, equal when p does not divide minors
    (checked with three primes: the maximum equals the rational rank)."""
    A, p, r = case
    q = naive.rank_fraction(A)
    assert rank_mod_p(A, p) <= q
    assert max(rank_mod_p(A, pp) for pp in PRIMES) <= q


@settings(max_examples=naive.n_examples(60), **SETTINGS)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_small_random_integer_rank_equals_rational_rank(m, n, seed):
    rng = np.random.default_rng(seed)
    r = int(rng.integers(0, min(m, n) + 1))
    A = rng.integers(-5, 6, (m, r)) @ rng.integers(-5, 6, (r, n)) if r else np.zeros((m, n), int)
    q = naive.rank_fraction(A)
    assert max(rank_mod_p(A, pp) for pp in PRIMES) == q


@settings(max_examples=naive.n_examples(120), **SETTINGS)
@given(low_rank_matrices(max_dim=200), st.integers(0, 2**32 - 1))
def test_invariants(case, seed):
    A, p, _ = case
    rng = np.random.default_rng(seed)
    r = rank_mod_p(A, p)
    assert 0 <= r <= min(A.shape)
    assert rank_mod_p(A[rng.permutation(A.shape[0])], p) == r
    assert rank_mod_p(A[:, rng.permutation(A.shape[1])], p) == r
    assert rank_mod_p(A.T, p) == r
    assert rank_mod_p(np.asfortranarray(A), p) == r
    assert rank_mod_p(A.astype(np.float64), p) == r
    assert rank_mod_p(np.vstack([A, A]), p) == r  # repeated rows add nothing


def test_input_is_not_modified():
    rng = np.random.default_rng(0)
    A = rng.integers(0, 100, (150, 140)).astype(np.float64)
    B = A.copy()
    rank_mod_p(A)
    np.testing.assert_array_equal(A, B)


def test_edge_shapes():
    p = PRIMES[0]
    assert rank_mod_p(np.zeros((0, 5)), p) == 0
    assert rank_mod_p(np.zeros((5, 0)), p) == 0
    assert rank_mod_p(np.zeros((0, 0)), p) == 0
    assert rank_mod_p(np.zeros((7, 9)), p) == 0
    assert rank_mod_p(np.eye(300), p) == 300
    assert rank_mod_p(np.full((3, 3), p), p) == 0  # multiples of p vanish
    assert rank_mod_p([[1, 2], [2, 4]], p) == 1
    assert rank_mod_p(np.array([[True, False], [False, True]]), p) == 2
    assert rank_mod_p(np.array([[-1, 1], [1, -1]], dtype=np.int8), p) == 1


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((2, 2, 2)), 5.0])
def test_rejects_non_matrices(bad):
    with pytest.raises(ValueError, match="2-D"):
        rank_mod_p(bad)


@pytest.mark.parametrize("p", [2, 1, 0, -7, 2**21, 2**21 + 23, 2**31 - 1])
def test_rejects_primes_out_of_range(p):
    with pytest.raises(ValueError, match="prime"):
        rank_mod_p(np.eye(2), p)


@pytest.mark.parametrize("bad", [[[0.5, 1.0]], [[np.nan, 1.0]], [[np.inf, 0.0]], [[1.0 + 1e-9]]])
def test_rejects_non_integer_entries(bad):
    with pytest.raises(ValueError, match="integer"):
        rank_mod_p(np.array(bad))


# ---- regressions: kernel bugs these tests found (fixed in ad6ce18) ---------------------------

@pytest.mark.parametrize("p", [9, 15, 65536, 1048575])
def test_rejects_composite_modulus(p):
    """Regression: rank_mod_p used to check only 2 < p < 2**21, not that p is prime.  With a
    composite modulus the Fermat 'inverse' is wrong and the result meaningless:
    rank_mod_p([[2,1],[4,2]], 9) returned 2 although the matrix has rank 1 over Q."""
    with pytest.raises(ValueError):
        rank_mod_p(np.array([[2, 1], [4, 2]]), p)


def test_uint64_entries_above_2_63_are_reduced_exactly():
    """Regression: _as_field cast integer input to int64 before reducing, so uint64 entries
    >= 2**63 wrapped around: a multiple of p became a non-zero residue and the rank too high."""
    p = PRIMES[0]
    v = p * ((2**63) // p + 1)          # a multiple of p in [2**63, 2**64)
    assert 2**63 <= v < 2**64
    assert rank_mod_p(np.array([[v]], dtype=np.uint64), p) == 0


def test_primes_are_primes_and_below_limit():
    assert len(set(PRIMES)) == len(PRIMES) >= 2
    for q in PRIMES:
        assert 2 < q < modp.PRIME_LIMIT
        assert all(q % d for d in range(2, int(q**0.5) + 1))
    assert PANEL == 128


def test_naive_references_agree_with_each_other():
    rng = np.random.default_rng(5)
    for _ in range(30):
        m, n = rng.integers(0, 12, 2)
        r = int(rng.integers(0, min(m, n) + 1))
        A = rng.integers(-4, 5, (m, r)) @ rng.integers(-4, 5, (r, n)) if r else np.zeros((m, n), int)
        q = naive.rank_fraction(A)
        assert naive.rank_mod_p_numpy(A) == q  # p = 2**31 - 1 divides no small minor
        assert rank_mod_p_naive(A, 1048573) <= q
