"""Conv operators W and K (kernels/conv_ops.py, conv_blocks.py, geometry.py) against torch and
against the explicit loops of tests/naive.py, on random float64 data over random geometries."""
import naive
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from archscan_kernels import (
    ConvGeometry,
    channel_gradient_block,
    covered_pixels,
    forward_matrix,
    gradient_matrix,
)
from archscan_kernels.conv_blocks import component_block, stack_builder
from archscan_kernels.conv_ops import tap_components
from archscan_kernels.fill import fill_forward, fill_gradient
from archscan_kernels.geometry import live_outputs, read_table, tap_masks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.filter_too_much])
TORCH_GEOMS = naive.geometries(max_unknowns=300, torch_padding=True)
ANY_GEOMS = naive.geometries(max_unknowns=300)


def _data(geom, seed, integer=False):
    rng = np.random.default_rng(seed)
    shapes = [(geom.C, geom.H, geom.W), (geom.F, geom.Cg, geom.kh, geom.kw), (geom.F, geom.Ho, geom.Wo)]
    if integer:
        return [rng.integers(-9, 10, s).astype(np.float64) for s in shapes]
    return [rng.standard_normal(s) for s in shapes]


def torch_conv(geom, x, w):
    """nn.Conv2d's computation: F.pad for non-zero modes, then conv2d with padding 0."""
    xt, wt = torch.from_numpy(x)[None], torch.from_numpy(w)
    kw = dict(stride=(geom.sh, geom.sw), dilation=(geom.dh, geom.dw), groups=geom.groups)
    if geom.padding_mode == "zeros":
        return TF.conv2d(xt, wt, padding=(geom.ph, geom.pw), **kw)[0]
    xp = TF.pad(xt, (geom.pw, geom.pw, geom.ph, geom.ph), mode=geom.padding_mode)
    return TF.conv2d(xp, wt, padding=0, **kw)[0]


def torch_module(geom, w):
    m = torch.nn.Conv2d(geom.C, geom.F, (geom.kh, geom.kw), stride=(geom.sh, geom.sw),
                        padding=(geom.ph, geom.pw), dilation=(geom.dh, geom.dw),
                        groups=geom.groups, bias=False, padding_mode=geom.padding_mode,
                        dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
    return m


def torch_weight_grad(geom, x, w, g):
    wt = torch.from_numpy(w).requires_grad_(True)
    xt, gt = torch.from_numpy(x)[None], torch.from_numpy(g)[None]
    kw = dict(stride=(geom.sh, geom.sw), dilation=(geom.dh, geom.dw), groups=geom.groups)
    if geom.padding_mode == "zeros":
        z = TF.conv2d(xt, wt, padding=(geom.ph, geom.pw), **kw)
    else:
        z = TF.conv2d(TF.pad(xt, (geom.pw, geom.pw, geom.ph, geom.ph), mode=geom.padding_mode), wt, **kw)
    (dw,) = torch.autograd.grad((z * gt).sum(), wt)
    return dw.numpy()


@settings(max_examples=naive.n_examples(150), **SETTINGS)
@given(TORCH_GEOMS, st.integers(0, 2**32 - 1))
def test_forward_and_gradient_match_torch(kw, seed):
    geom = ConvGeometry(**kw)
    x, w, g = _data(geom, seed)
    z = torch_conv(geom, x, w)
    assert tuple(z.shape) == (geom.F, geom.Ho, geom.Wo)
    Wm, Km = forward_matrix(geom, w), gradient_matrix(geom, g)
    assert Wm.shape == (geom.F * geom.Ho * geom.Wo, geom.C * geom.H * geom.W)
    assert Km.shape == (geom.F * geom.Cg * geom.kh * geom.kw, geom.C * geom.H * geom.W)
    np.testing.assert_allclose(Wm @ x.ravel(), z.numpy().ravel(), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        zm = torch_module(geom, w)(torch.from_numpy(x)[None])[0]
    np.testing.assert_allclose(Wm @ x.ravel(), zm.numpy().ravel(), rtol=1e-10, atol=1e-10)
    dw = torch_weight_grad(geom, x, w, g)
    np.testing.assert_allclose(Km @ x.ravel(), dw.ravel(), rtol=1e-10, atol=1e-10)


@settings(max_examples=naive.n_examples(60), **SETTINGS)
@given(naive.geometries(max_unknowns=300, modes=("zeros",)), st.integers(0, 2**32 - 1))
def test_gradient_matches_conv2d_weight(kw, seed):
    geom = ConvGeometry(**kw)
    x, w, g = _data(geom, seed)
    dw = torch.nn.grad.conv2d_weight(torch.from_numpy(x)[None], w.shape, torch.from_numpy(g)[None],
                                     stride=(geom.sh, geom.sw), padding=(geom.ph, geom.pw),
                                     dilation=(geom.dh, geom.dw), groups=geom.groups)
    np.testing.assert_allclose(gradient_matrix(geom, g) @ x.ravel(), dw.numpy().ravel(),
                               rtol=1e-10, atol=1e-10)


@settings(max_examples=naive.n_examples(150), **SETTINGS)
@given(ANY_GEOMS, st.integers(0, 2**32 - 1))
def test_operators_equal_naive_loops(kw, seed):
    """Integer data: the kernel's matrices equal the explicit loops entry for entry (any padding,
    circular padding wider than the input included)."""
    geom = ConvGeometry(**kw)
    x, w, g = _data(geom, seed, integer=True)
    Wm, Km = forward_matrix(geom, w), gradient_matrix(geom, g)
    np.testing.assert_array_equal(Wm, naive.naive_forward(kw_tuple(kw), w))
    np.testing.assert_array_equal(Km, naive.naive_gradient(kw_tuple(kw), g))
    # the naive matrices themselves agree with a direct convolution of the padded input
    np.testing.assert_allclose(Wm @ x.ravel(), naive.naive_conv_output(kw_tuple(kw), x, w).ravel())


@settings(max_examples=naive.n_examples(120), **SETTINGS)
@given(ANY_GEOMS, st.integers(0, 2**32 - 1))
def test_fill_kernel_places_the_naive_matrices_by_its_maps(kw, seed):
    """The one fill kernel under arbitrary maps: W and K rows of one layer (groups through the
    channel offsets c0) written into one matrix, rows shuffled and some W rows left out (-1),
    unknowns shuffled -- bit for bit the naive loops' matrices placed the same way (float data:
    every entry sums its terms in the naive loops' order)."""
    geom = ConvGeometry(**kw)
    rng = np.random.default_rng(seed)
    _, w, g = _data(geom, seed)
    Wn, Kn = naive.naive_forward(kw_tuple(kw), w), naive.naive_gradient(kw_tuple(kw), g)
    keep = rng.random(Wn.shape[0]) < 0.7
    n_rows = int(keep.sum()) + Kn.shape[0]
    dest = rng.permutation(n_rows)
    w_rows = np.full(Wn.shape[0], -1, np.int64)
    w_rows[keep] = dest[: keep.sum()]
    k_rows = dest[keep.sum():]
    cols = rng.permutation(geom.unknowns)          # unknown (c, pixel) -> its column
    colmap = cols.reshape(geom.C, geom.H * geom.W)
    c0 = (np.arange(geom.F) // geom.Fg) * geom.Cg
    pix, nt = read_table(geom), geom.kh * geom.kw
    out = np.zeros((n_rows, geom.unknowns))
    fill_forward(out, w_rows.reshape(geom.F, -1), w.reshape(geom.F, geom.Cg, nt), pix, colmap, c0)
    fill_gradient(out, k_rows.reshape(geom.F, geom.Cg * nt), g.reshape(geom.F, -1), pix, colmap, c0)
    want = np.zeros_like(out)
    want[np.ix_(w_rows[keep], cols)] = Wn[keep]
    want[np.ix_(k_rows, cols)] = Kn
    np.testing.assert_array_equal(out, want)


def kw_tuple(kw):
    return (kw["C"], kw["H"], kw["W"], kw["F"], kw["kh"], kw["kw"], kw["sh"], kw["sw"], kw["ph"],
            kw["pw"], kw["dh"], kw["dw"], kw["groups"], kw["padding_mode"])


@settings(max_examples=naive.n_examples(100), **SETTINGS)
@given(ANY_GEOMS, st.integers(0, 2**32 - 1))
def test_channel_block_is_the_repeated_diagonal_block(kw, seed):
    geom = ConvGeometry(**kw)
    _, _, g = _data(geom, seed)
    K = gradient_matrix(geom, g).reshape(geom.F, geom.Cg, geom.kh * geom.kw, geom.C, geom.H * geom.W)
    for gi in range(geom.groups):
        fs = slice(gi * geom.Fg, (gi + 1) * geom.Fg)
        Kc = channel_gradient_block(geom, g[fs])
        assert Kc.shape == (geom.Fg * geom.kh * geom.kw, geom.H * geom.W)
        np.testing.assert_array_equal(Kc, naive.naive_channel_block(geom, g[fs]))
        for ci in range(geom.Cg):
            c = gi * geom.Cg + ci
            np.testing.assert_array_equal(K[fs, ci, :, c, :].reshape(Kc.shape), Kc)
            off = np.delete(K[fs, ci], c, axis=2)
            assert not off.any(), "gradient rows of channel c must not touch other channels"


@settings(max_examples=naive.n_examples(100), **SETTINGS)
@given(ANY_GEOMS, st.integers(0, 2**32 - 1))
def test_masks_coverage_live_outputs_and_components(kw, seed):
    """Structural helpers the rank engine relies on, from the naive matrices' sparsity pattern
    (positive random data, so folded padding adds and never cancels)."""
    geom = ConvGeometry(**kw)
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 5, (geom.F, geom.Cg, geom.kh, geom.kw)).astype(float)
    g = rng.integers(1, 5, (geom.F, geom.Ho, geom.Wo)).astype(float)
    t = kw_tuple(kw)
    Kc = naive.naive_channel_block(t, g[: geom.Fg])          # rows (f, a, b)
    masks = tap_masks(geom).reshape(geom.kh * geom.kw, -1)
    np.testing.assert_array_equal(Kc.reshape(geom.Fg, geom.kh * geom.kw, -1)[0] != 0, masks)
    np.testing.assert_array_equal(covered_pixels(geom).ravel(), Kc.any(axis=0))
    Wm = naive.naive_forward(t, w)
    assert live_outputs(geom) * geom.F == int(Wm.any(axis=1).sum())
    seen_taps, seen_pix = set(), set()
    for taps, pixels in tap_components(geom):
        assert not (set(taps.tolist()) & seen_taps) and not (set(pixels.tolist()) & seen_pix)
        seen_taps |= set(taps.tolist())
        seen_pix |= set(pixels.tolist())
        rows = (np.arange(geom.Fg)[:, None] * geom.kh * geom.kw + taps[None, :]).ravel()
        outside = np.setdiff1d(np.arange(geom.H * geom.W), pixels)
        assert not Kc[np.ix_(rows, outside)].any(), "a component's taps read outside its pixels"
        np.testing.assert_array_equal(component_block(geom, g[: geom.Fg], taps, pixels),
                                      Kc[np.ix_(rows, pixels)])
    assert seen_pix == set(np.flatnonzero(Kc.any(axis=0)).tolist())
    assert seen_taps == set(np.flatnonzero(Kc.reshape(geom.Fg, geom.kh * geom.kw, -1)[0].any(axis=1)).tolist())


@settings(max_examples=naive.n_examples(60), **SETTINGS)
@given(naive.geometries(max_unknowns=200, groups=False), st.integers(1, 3), st.integers(1, 4),
       st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_stack_builder_pattern(kw, n_chan, n_w, n_k, seed):
    """stack_builder's instance has the sparsity pattern of the naive [W; K] it stands for."""
    geom = ConvGeometry(**kw)
    p = 1048573
    A = stack_builder(geom, n_chan, n_w, n_k)(np.random.default_rng(seed), p)
    t = list(kw_tuple(kw))
    t[0], t[3] = n_chan, n_w
    Wn = naive.naive_forward(tuple(t), np.ones((n_w, n_chan, geom.kh, geom.kw)))
    t[3] = n_k
    Kn = naive.naive_gradient(tuple(t), np.ones((n_k, geom.Ho, geom.Wo)))
    expected = np.vstack([Wn, Kn]) != 0
    assert A.shape == expected.shape
    np.testing.assert_array_equal(A != 0, expected)  # sums of positive residues never cancel
    assert np.all(A == np.round(A)) and A.min() >= 0


def test_depthwise_and_rectangular_example():
    geom = ConvGeometry(C=3, H=7, W=5, F=6, kh=3, kw=2, sh=2, sw=1, ph=1, pw=0, dh=1, dw=2,
                        groups=3, padding_mode="replicate")
    x, w, g = _data(geom, 0)
    np.testing.assert_allclose(forward_matrix(geom, w) @ x.ravel(), torch_conv(geom, x, w).numpy().ravel())
    np.testing.assert_allclose(gradient_matrix(geom, g) @ x.ravel(),
                               torch_weight_grad(geom, x, w, g).ravel())


@pytest.mark.parametrize("ph,pw", [(5, 0), (4, 9), (13, 2)])
def test_circular_padding_wider_than_input(ph, pw):
    """torch refuses to wrap more than once; numpy's 'wrap' (and the kernel) keep going."""
    geom = ConvGeometry(C=2, H=3, W=4, F=2, kh=3, kw=2, ph=ph, pw=pw, padding_mode="circular")
    x, w, g = _data(geom, 1, integer=True)
    np.testing.assert_array_equal(forward_matrix(geom, w), naive.naive_forward(geom, w))
    np.testing.assert_array_equal(gradient_matrix(geom, g), naive.naive_gradient(geom, g))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_on_single_pixel_axis(mode):
    ph = 0 if mode == "reflect" else 1
    geom = ConvGeometry(C=1, H=1, W=4, F=1, kh=3 if ph else 1, kw=3, ph=ph, pw=1, padding_mode=mode)
    x, w, g = _data(geom, 2)
    np.testing.assert_allclose(forward_matrix(geom, w) @ x.ravel(), torch_conv(geom, x, w).numpy().ravel())
    np.testing.assert_allclose(gradient_matrix(geom, g) @ x.ravel(),
                               torch_weight_grad(geom, x, w, g).ravel())


def test_shape_validation():
    geom = ConvGeometry(C=2, H=5, W=5, F=4, kh=3, kw=3, groups=2)
    with pytest.raises(ValueError):
        forward_matrix(geom, np.zeros((4, 2, 3, 3)))      # C/groups is 1
    with pytest.raises(ValueError):
        gradient_matrix(geom, np.zeros((4, 4, 4)))        # output is 3x3
    forward_matrix(geom, np.zeros((4, 1, 3, 3)))
    gradient_matrix(geom, np.zeros((4, 3, 3)))


@pytest.mark.parametrize("kwargs", [
    dict(C=0, H=4, W=4, F=1, kh=1, kw=1),
    dict(C=3, H=4, W=4, F=2, kh=1, kw=1, groups=2),
    dict(C=2, H=4, W=4, F=3, kh=1, kw=1, groups=2),
    dict(C=1, H=4, W=4, F=1, kh=3, kw=3, ph=-1),
    dict(C=1, H=4, W=4, F=1, kh=3, kw=3, sh=0),
    dict(C=1, H=4, W=4, F=1, kh=3, kw=3, dh=0),
    dict(C=1, H=2, W=2, F=1, kh=3, kw=3),
    dict(C=1, H=4, W=4, F=1, kh=3, kw=3, ph=4, padding_mode="reflect"),
    dict(C=1, H=4, W=4, F=1, kh=3, kw=3, padding_mode="mirror"),
])
def test_geometry_validation(kwargs):
    with pytest.raises(ValueError):
        ConvGeometry(**kwargs)


@settings(max_examples=naive.n_examples(100), **SETTINGS)
@given(TORCH_GEOMS)
def test_output_size_matches_torch(kw):
    geom = ConvGeometry(**kw)
    x = np.zeros((geom.C, geom.H, geom.W))
    w = np.zeros((geom.F, geom.Cg, geom.kh, geom.kw))
    assert tuple(torch_conv(geom, x, w).shape) == (geom.F, geom.Ho, geom.Wo)
    assert geom.unknowns == geom.C * geom.H * geom.W
    pe = geom.padded_entries()
    if geom.padding_mode == "zeros":
        assert pe == geom.C * ((geom.H + 2 * geom.ph) * (geom.W + 2 * geom.pw) - geom.H * geom.W)
    else:
        assert pe == 0
