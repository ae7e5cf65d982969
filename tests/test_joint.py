"""Two layers reading one tensor: their rows stack (joint rank), checked against a dense reference."""
import numpy as np
from archscan_kernels import (
    ConvGeometry,
    Reader,
    conv_ranks,
    forward_matrix,
    gradient_matrix,
    joint_rank,
)


def _dense(geoms, rng):
    blocks = []
    for g in geoms:
        blocks.append(forward_matrix(g, rng.standard_normal((g.F, g.Cg, g.kh, g.kw))))
        blocks.append(gradient_matrix(g, rng.standard_normal((g.F, g.Ho, g.Wo))))
    return np.linalg.matrix_rank(np.vstack(blocks))


def test_two_branches_stack_to_full_rank_like_dense():
    a = ConvGeometry(3, 12, 12, 2, 4, 4, 2, 2, 1, 1)
    b = ConvGeometry(3, 12, 12, 2, 3, 3, 2, 2, 1, 1)
    ra, rb = conv_ranks(a).stack.value, conv_ranks(b).stack.value
    assert ra < a.unknowns and rb < b.unknowns  # each alone is deficient
    rank, exact = joint_rank([Reader(a, True, True, ra), Reader(b, True, True, rb)], a.unknowns)
    assert exact and rank == _dense([a, b], np.random.default_rng(0)) > max(ra, rb)


def test_large_inputs_fall_back_to_the_attacker_favourable_bound():
    a = ConvGeometry(8, 32, 32, 2, 3, 3, 2, 2, 1, 1)
    rank, exact = joint_rank([Reader(a, True, True, 100), Reader(a, True, True, 200)], a.unknowns)
    assert (rank, exact) == (300, False)


def test_masked_rows_are_never_eliminated_exactly():
    a = ConvGeometry(1, 6, 6, 2, 3, 3, 1, 1, 1, 1)
    rank, exact = joint_rank([Reader(a, True, True, 10, masked=True), Reader(a, True, True, 12)], a.unknowns)
    assert (rank, exact) == (min(a.unknowns, 22), False)
