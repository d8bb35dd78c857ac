"""The Winograd path of the 3x3 mask-B convolution (probgen.kernels._winograd): each compiled transform
against its NumPy twin, each backward transform as the adjoint of its forward, and the whole layer against
the dense definition, torch conv2d (float64 autograd) and finite differences, in both layouts and at
several thread counts; the layer functions choose it only where it applies."""
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from probgen.kernels import _winograd as wg
from probgen.kernels import masked_conv as mc
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

# N, C_in, C_out, H, W (even), seed
shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 7),
                   st.integers(1, 5).map(lambda u: 2 * u), st.integers(0, 2**16))


def _problem(seed, N, C_in, C_out, H, W, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C_in, H, W)).astype(dtype), rng.standard_normal((C_out, C_in, 5)).astype(dtype),
            rng.standard_normal(C_out).astype(dtype), rng.standard_normal((N, C_out, H, W)).astype(dtype))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max(initial=0) / max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-300)


@contextmanager
def every_layer(blas=True):
    """Winograd for any channel count inside the block, so that small problems take that path; with
    ``blas=False`` the layer functions run their GEMMs by ``matmul`` (as where NumPy has no 64-bit CBLAS)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mc, "_WINOGRAD_MIN_CHANNELS", 1)
        if not blas:
            mp.setattr(wg, "_cblas_gemm", lambda dtype: None)
        yield


# ----------------------------------------------------------------------------- transforms
@given(shapes)
def test_transforms_match_their_numpy_twins(args):
    N, C, C_out, H, W, seed = args
    x, _, b, dy = _problem(seed, N, C, C_out, H, W)
    P = H * W // 2
    V = np.full((7, C, N * P), np.nan)
    wg.input_transform(x.reshape(N, C, H * W), False, 0, N, W, V)
    np.testing.assert_array_equal(V, wg.input_transform_reference(x))
    M = np.random.default_rng(seed).standard_normal((4, C_out, N * P))
    y = np.empty((N, C_out, H * W))
    wg.output_transform(M, b, y, False, 0, N, W)
    np.testing.assert_allclose(y.reshape(N, C_out, H, W), wg.output_transform_reference(M, b, N, H, W),
                               rtol=1e-15, atol=1e-15)
    dM, db = np.empty((4, C_out, N * P)), np.zeros(C_out)
    wg.output_transform_backward(dy.reshape(N, C_out, H * W), False, 0, N, W, dM, db)
    rdM, rdb = wg.output_transform_backward_reference(dy)
    np.testing.assert_array_equal(dM, rdM)
    np.testing.assert_allclose(db, rdb, rtol=1e-13, atol=1e-13)
    dV = np.random.default_rng(seed + 1).standard_normal((7, C, N * P))
    dx = np.full((N, C, H * W), np.nan)
    wg.input_transform_backward(dV, dx, False, 0, N, W)
    np.testing.assert_allclose(dx.reshape(x.shape), wg.input_transform_backward_reference(dV, N, H, W),
                               rtol=1e-14, atol=1e-14)


@given(shapes)
def test_backward_transforms_are_the_adjoints(args):
    """<T x, v> = <x, T' v> for the input transform and for the output transform (bias 0)."""
    N, C, C_out, H, W, seed = args
    rng = np.random.default_rng(seed)
    x, P = rng.standard_normal((N, C, H, W)), H * W // 2
    dV = rng.standard_normal((7, C, N * P))
    lhs = np.vdot(wg.input_transform_reference(x), dV)
    assert lhs == pytest.approx(np.vdot(x, wg.input_transform_backward_reference(dV, N, H, W)), rel=1e-12, abs=1e-12)
    M, dy = rng.standard_normal((4, C_out, N * P)), rng.standard_normal((N, C_out, H, W))
    lhs = np.vdot(wg.output_transform_reference(M, np.zeros(C_out), N, H, W), dy)
    assert lhs == pytest.approx(np.vdot(M, wg.output_transform_backward_reference(dy)[0]), rel=1e-12, abs=1e-12)


def test_weight_transform_and_its_gradient():
    """U = T(W) is linear: the gradient of <T(W), dU> is T'(dU), checked coordinate by coordinate."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((3, 2, 5))
    dU3, dUc = rng.standard_normal((3, 3, 4)), rng.standard_normal((3, 2))
    g = wg.weight_transform_backward(dU3, dUc)
    for idx in np.ndindex(W.shape):
        E = np.zeros_like(W)
        E[idx] = 1.0
        U3, Uc = wg.weight_transform(E)  # linear: the derivative along E is T(E)
        assert g[idx] == pytest.approx(np.vdot(U3, dU3) + np.vdot(Uc, dUc), rel=1e-14, abs=1e-14)


# ----------------------------------------------------------------------------- the layer
def _run(x, Wp, b, dy, layout="NCHW", need_dx=True, workspace=None):
    cn = layout == "CNHW"
    t = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2, 3))) if cn else (lambda a: a)
    y, cache = masked_conv2d_forward(t(x), Wp, b, "B", layout=layout, workspace=workspace)
    assert cache[6] == "winograd"
    y = t(y).copy()
    dx, dW, db = masked_conv2d_backward(t(dy), cache, need_dx=need_dx)
    return y, (t(dx).copy() if need_dx else None), dW, db


@settings(max_examples=60)
@given(shapes, st.sampled_from(["NCHW", "CNHW"]), st.sampled_from([1, 2, 3]), st.booleans(), st.booleans())
def test_layer_matches_the_dense_definition(args, layout, threads, need_dx, blas):
    N, C_in, C_out, H, W, seed = args
    x, Wp, b, dy = _problem(seed, N, C_in, C_out, H, W)
    with every_layer(blas), threadpool_limits(threads):
        y, dx, dW, db = _run(x, Wp, b, dy, layout, need_dx, MaskedConvWorkspace())
    rdx, rdW, rdb = masked_conv2d_backward_reference(dy, x, Wp, "B")
    assert _rel(y, masked_conv2d_forward_reference(x, Wp, b, "B")) <= 1e-13
    assert _rel(dW, rdW) <= 1e-13 and _rel(db, rdb) <= 1e-13
    assert (dx is None) if not need_dx else _rel(dx, rdx) <= 1e-13


@settings(max_examples=20)
@given(shapes)
def test_layer_equals_torch_conv2d(args):
    from _require import require_torch
    torch = require_torch()
    N, C_in, C_out, H, W, seed = args
    x, Wp, b, dy = _problem(seed, N, C_in, C_out, H, W)
    with every_layer():
        y, dx, dW, db = _run(x, Wp, b, dy)
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(unpack_masked_weight(Wp, "B"), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, Wt * torch.tensor(conv_mask(3, "B")), bt, padding=1)
    yt.backward(torch.tensor(dy))
    assert _rel(y, yt.detach().numpy()) <= 1e-12
    assert _rel(dx, xt.grad.numpy()) <= 1e-12
    assert _rel(dW, pack_masked_weight(Wt.grad.numpy(), "B")) <= 1e-12
    assert _rel(db, bt.grad.numpy()) <= 1e-12


def test_layer_gradients_agree_with_finite_differences():
    """Of L = <y, R> at 16 input channels (the default threshold), central differences in float64."""
    x, Wp, b, R = _problem(7, 2, 16, 3, 4, 6)
    _, dx, dW, db = _run(x, Wp, b, R)
    params = {"x": x, "W": Wp, "b": b}

    def loss(p):
        return np.vdot(masked_conv2d_forward(p["x"], p["W"], p["b"], "B")[0], R)

    rng, h = np.random.default_rng(0), 1e-6
    for name, grad in (("x", dx), ("W", dW), ("b", db)):
        for _ in range(6):
            idx = tuple(int(rng.integers(0, s)) for s in params[name].shape)
            diffs = []
            for sign in (1, -1):
                moved = params[name].copy()
                moved[idx] += sign * h
                diffs.append(loss({**params, name: moved}))
            assert grad[idx] == pytest.approx((diffs[0] - diffs[1]) / (2 * h), rel=1e-7, abs=1e-7), (name, idx)


def test_numpys_cblas_is_found():
    """The layer functions call NumPy's own ``cblas_?gemm`` from compiled loops (PyPI wheels export it as
    ``scipy_cblas_?gemm64_``); elsewhere they fall back to ``matmul`` and this test says so."""
    from _require import _missing
    for dtype in (np.float32, np.float64):
        if wg._cblas_gemm(dtype) is None:
            _missing("NumPy's BLAS exports no 64-bit-integer cblas_?gemm: the Winograd layers use matmul")
    x, Wp, b, dy = _problem(4, 2, 16, 3, 4, 6)
    with every_layer(False):
        ref = _run(x, Wp, b, dy)
    for r, g in zip(ref, _run(x, Wp, b, dy)):
        assert _rel(g, r) <= 1e-13


def test_float32_is_close_to_float64():
    x, Wp, b, dy = _problem(1, 4, 32, 16, 9, 10)
    ref = _run(x, Wp, b, dy)
    got = _run(*(a.astype(np.float32) for a in (x, Wp, b, dy)))
    for r, g in zip(ref, got):
        assert g.dtype == np.float32 and _rel(g, r) <= 2e-6


def test_layer_functions_choose_it_only_where_it_applies():
    """3x3 mask B, at least 16 input channels, even width; anything else gathers, with the same numbers."""
    for (C_in, W, mask, k), expect in [((16, 6, "B", 3), "winograd"), ((15, 6, "B", 3), None), ((16, 5, "B", 3), None),
                                       ((16, 6, "A", 3), None), ((16, 6, "B", 5), None)]:
        x, _, b, dy = _problem(0, 2, C_in, 3, 4, W)
        Wp = np.random.default_rng(1).standard_normal((3, C_in, 2 * (k // 2) * (k // 2 + 1) + (mask == "B")))
        y, cache = masked_conv2d_forward(x, Wp, b, mask)
        assert (cache[6] == "winograd") == (expect == "winograd")
        assert _rel(y, masked_conv2d_forward_reference(x, Wp, b, mask)) <= 1e-13


def test_a_winograd_cache_serves_one_backward():
    x, Wp, b, dy = _problem(2, 2, 16, 2, 4, 4)
    ws = MaskedConvWorkspace()
    _, cache = masked_conv2d_forward(x, Wp, b, "B", workspace=ws)
    masked_conv2d_backward(dy, cache)
    with pytest.raises(ValueError, match="already used"):
        masked_conv2d_backward(dy, cache)
    _, old = masked_conv2d_forward(x, Wp, b, "B", workspace=ws)
    masked_conv2d_forward(x, Wp, b, "B", workspace=ws)
    with pytest.raises(ValueError, match="latest forward"):
        masked_conv2d_backward(dy, old)
