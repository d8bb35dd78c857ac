"""The register-blocked SIMD tiles (probgen.kernels._simd): the forward product and the lane sums of the
weight gradient against their NumPy twins on every kind of edge (rows that do not fill a tile, pixels that do
not fill a vector, strided views as in the CNHW layout), and the masked-convolution layer through them against
the dense definition and torch conv2d in float64; the layer functions choose them only where they apply."""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from probgen.kernels import _simd
from probgen.kernels.masked_conv import (
    MaskedConvWorkspace,
    conv_mask,
    masked_conv2d_backward,
    masked_conv2d_backward_reference,
    masked_conv2d_forward,
    masked_conv2d_forward_reference,
    pack_masked_weight,
    unpack_masked_weight,
)

DTYPES = [np.float32, np.float64]
UNIT = {np.float32: 2.0 ** -24, np.float64: 2.0 ** -53}


def _within_dot_bound(got, ref, scale, n, dtype):
    """|got - ref| <= 2 n u sum |a_i b_i| entrywise: the error bound of an n-term dot product in precision u
    (``scale`` the sums of absolute products), so cancellation cannot hide a wrong sum or fail a right one."""
    err = np.abs(np.asarray(got, np.float64) - ref)
    return bool(np.all(err <= 2 * (n + 2) * UNIT[dtype] * scale + 1e-300))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max(initial=0) / max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-300)


@contextmanager
def every_shape():
    """The tiles for every gathered product, so that small problems of any shape take that path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_simd, "applies", lambda *args: True)
        yield


# m images, C_out rows, K1 rows of the gather, L pixels, seed
problems = st.tuples(st.integers(1, 3), st.integers(1, 19), st.integers(1, 13), st.integers(1, 70),
                     st.integers(0, 2**16))


def _stacks(rng, m, C, K1, L, dtype, strided):
    """dY-like (m, C, L) and gather-like (m, K1, L) stacks; ``strided``: channel-major views (CNHW)."""
    if strided:
        A = rng.standard_normal((C, m, L)).astype(dtype).transpose(1, 0, 2)
        B = rng.standard_normal((K1, m + 1, L)).astype(dtype)[:, :m].transpose(1, 0, 2)
    else:
        A = rng.standard_normal((m, C, L)).astype(dtype)
        B = rng.standard_normal((m, K1, L)).astype(dtype)
    return A, B


@settings(max_examples=40, deadline=None)
@given(problems, st.sampled_from(DTYPES), st.booleans())
def test_lane_sums_match_their_numpy_twin(args, dtype, strided):
    m, C, K1, L, seed = args
    A, B = _stacks(np.random.default_rng(seed), m, C, K1, L, dtype, strided)
    lanes = np.zeros(_simd.lanes_shape(C, K1, dtype), dtype)
    _simd.dw_lanes(A, B, lanes)
    ref = _simd.dw_lanes_reference(A, B, lanes.shape[2])
    scale = _simd.dw_lanes_reference(np.abs(A), np.abs(B), lanes.shape[2])
    n = m * L
    assert _within_dot_bound(lanes, ref, scale, n, dtype)
    acc = np.full((C, K1), 0.5, dtype)  # accumulate onto an existing sum, and overwrite
    _simd.accumulate_dw(acc, A, B, first=False)
    assert _within_dot_bound(acc, 0.5 + ref.sum(axis=2), 0.5 + scale.sum(axis=2), n, dtype)
    _simd.accumulate_dw(acc, A, B, first=True)
    assert _within_dot_bound(acc, ref.sum(axis=2), scale.sum(axis=2), n, dtype)


@settings(max_examples=40, deadline=None)
@given(problems, st.sampled_from(DTYPES), st.booleans())
def test_product_matches_its_numpy_twin(args, dtype, strided):
    m, C, K1, L, seed = args
    rng = np.random.default_rng(seed)
    _, X = _stacks(rng, m, C, K1 + 1, L, dtype, strided)
    X[:, K1] = 1  # the ones row of the bias (not read: the tiles start from the bias)
    Wb = rng.standard_normal((C, K1 + 1)).astype(dtype)
    Y = np.full((m, C, L), np.nan, dtype)
    _simd.forward_product(Wb, X, Y)
    ref = _simd.product_reference(Wb, X[:, :K1])
    np.testing.assert_allclose(ref, np.matmul(Wb.astype(np.float64), X.astype(np.float64)), rtol=1e-13, atol=1e-13)
    assert _within_dot_bound(Y, ref, _simd.product_reference(np.abs(Wb), np.abs(X[:, :K1])), K1 + 1, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_run_in_segments(dtype):
    """A 2-D weight gradient over several images' pixels (the CNHW chunks) is cut into segments of 1024
    columns and a remainder; the sum is the plain product."""
    rng = np.random.default_rng(0)
    L = 3 * _simd._SEGMENT + 37
    dY, X = rng.standard_normal((9, L)).astype(dtype), rng.standard_normal((6, L + 5)).astype(dtype)[:, 5:]
    acc = np.empty((9, 6), dtype)
    _simd.accumulate_dw(acc, dY, X, first=True)
    ref = dY.astype(np.float64) @ X.T.astype(np.float64)
    assert _within_dot_bound(acc, ref, np.abs(dY).astype(np.float64) @ np.abs(X).T.astype(np.float64), L, dtype)


def test_the_window_is_the_measured_one():
    assert not _simd.applies(32, 25, 784, np.float32)
    assert not _simd.applies(64, 41, 784, np.float32)
    assert not _simd.applies(64, 25, 784, np.int32)
    assert _simd.applies(64, 25, 784, np.float32) == _simd.HAS_AVX512
    assert _simd.applies(64, 25, 784, np.float64) == _simd.HAS_AVX512


# ----------------------------------------------------------------------------- the layer
def _layer(x, Wp, b, dy, mask, layout, workspace=None):
    cn = layout == "CNHW"
    t = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2, 3))) if cn else (lambda a: a)
    y, cache = masked_conv2d_forward(t(x), Wp, b, mask, layout=layout, workspace=workspace)
    y = t(y).copy()
    dx, dW, db = masked_conv2d_backward(t(dy), cache)
    return y, t(dx), dW, db


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 6), st.integers(1, 7),
       st.sampled_from([(3, "A"), (3, "B"), (5, "A"), (7, "A")]), st.sampled_from(["NCHW", "CNHW"]),
       st.sampled_from([1, 2]), st.integers(0, 2**16))
def test_layer_through_the_tiles_matches_the_dense_definition(N, C_in, C_out, H, W, km, layout, threads, seed):
    k, mask = km
    rng = np.random.default_rng(seed)
    x, dy = rng.standard_normal((N, C_in, H, W)), rng.standard_normal((N, C_out, H, W))
    Wp = pack_masked_weight(rng.standard_normal((C_out, C_in, k, k)) * conv_mask(k, mask), mask)
    b = rng.standard_normal(C_out)
    with every_shape(), threadpool_limits(threads):
        y, dx, dW, db = _layer(x, Wp, b, dy, mask, layout, MaskedConvWorkspace())
    assert _rel(y, masked_conv2d_forward_reference(x, Wp, b, mask)) <= 1e-13
    rdx, rdW, rdb = masked_conv2d_backward_reference(dy, x, Wp, mask)
    assert _rel(dx, rdx) <= 1e-13
    assert _rel(dW, rdW) <= 1e-13
    assert _rel(db, rdb) <= 1e-13


@pytest.mark.parametrize("layout", ["NCHW", "CNHW"])
@pytest.mark.parametrize("threads", [1, 2])
def test_input_layer_in_its_window_equals_torch(layout, threads):
    """The 7x7 mask-A 1 -> 64 layer on 16x16 images (256 pixels: inside the window, so on an AVX-512 host it
    runs the tiles without any patching) equals torch conv2d with the masked weight, float64 autograd."""
    from _require import require_torch
    torch = require_torch()
    rng = np.random.default_rng(5)
    N, H, W = 3, 16, 16
    assert _simd.applies(64, 25, H * W, np.float64) == _simd.HAS_AVX512
    x, dy = rng.standard_normal((N, 1, H, W)), rng.standard_normal((N, 64, H, W))
    Wf = rng.standard_normal((64, 1, 7, 7)) * conv_mask(7, "A")
    b = rng.standard_normal(64)
    with threadpool_limits(threads):
        y, dx, dW, db = _layer(x, pack_masked_weight(Wf, "A"), b, dy, "A", layout)
    xt = torch.tensor(x, requires_grad=True)
    Wt, bt = torch.tensor(Wf, requires_grad=True), torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, Wt * torch.tensor(conv_mask(7, "A")), bt, padding=3)
    yt.backward(torch.tensor(dy))
    assert _rel(y, yt.detach().numpy()) <= 1e-13
    assert _rel(dx, xt.grad.numpy()) <= 1e-13
    assert _rel(unpack_masked_weight(dW, "A"), Wt.grad.numpy()) <= 1e-13
    assert _rel(db, bt.grad.numpy()) <= 1e-13


def test_float32_layer_through_the_tiles_agrees_with_float64():
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((4, 1, 16, 16)), rng.standard_normal((4, 64, 16, 16))
    Wp = pack_masked_weight(rng.standard_normal((64, 1, 7, 7)) * conv_mask(7, "A"), "A")
    b = rng.standard_normal(64)
    with every_shape():
        hi = _layer(x, Wp, b, dy, "A", "NCHW")
        lo = _layer(*(a.astype(np.float32) for a in (x, Wp, b, dy)), "A", "NCHW")
    for a, r in zip(lo, hi):
        assert a.dtype == np.float32
        assert _rel(a, r) <= 1e-5


_k_forward, _k_dw = _simd.forward_product, _simd.accumulate_dw  # the unpatched entry points


def test_layer_functions_choose_the_tiles_only_where_they_apply(monkeypatch):
    """The products run the tiles exactly when ``applies`` says so (counted through the two entry points)."""
    calls = []
    monkeypatch.setattr(_simd, "forward_product", lambda *a: calls.append("fwd") or _k_forward(*a))
    monkeypatch.setattr(_simd, "accumulate_dw", lambda *a: calls.append("dw") or _k_dw(*a))
    rng = np.random.default_rng(0)
    for C_in, k, mask, C_out in [(1, 7, "A", 64), (1, 7, "A", 32), (2, 3, "B", 64)]:
        calls.clear()
        x, dy = rng.standard_normal((2, C_in, 16, 16)), rng.standard_normal((2, C_out, 16, 16))
        Wp = pack_masked_weight(rng.standard_normal((C_out, C_in, k, k)) * conv_mask(k, mask), mask)
        with threadpool_limits(1):  # one image range: one call each
            _layer(x, Wp, rng.standard_normal(C_out), dy, mask, "NCHW")
        K1 = Wp.shape[1] * Wp.shape[2] + 1
        expected = ["fwd", "dw"] if _simd.applies(C_out, K1, 256, np.float64) else []
        assert calls == expected, (C_in, k, mask, C_out)
