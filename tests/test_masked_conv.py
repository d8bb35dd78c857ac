"""probgen.kernels.masked_conv: the Numba/BLAS masked convolution against its NumPy twin, torch
conv2d with a masked weight (float64 autograd), causality of every tap, dtype and buffer reuse."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probgen.kernels.masked_conv import (
    MaskedConvWorkspace,
    causal_taps,
    conv_mask,
    kernel_size_from_taps,
    masked_conv2d_backward,
    masked_conv2d_backward_reference,
    masked_conv2d_forward,
    masked_conv2d_forward_reference,
    n_causal_taps,
    pack_masked_weight,
    unpack_masked_weight,
)

KS = (1, 3, 5, 7)


def _problem(rng, N, C_in, C_out, H, W, k, mask, dtype=np.float64):
    T = n_causal_taps(k, mask)
    x = rng.standard_normal((N, C_in, H, W)).astype(dtype)
    Wp = rng.standard_normal((C_out, C_in, T)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    dy = rng.standard_normal((N, C_out, H, W)).astype(dtype)
    return x, Wp, b, dy


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-300)
    return np.abs(a - b).max(initial=0) / scale


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("mask", "AB")
def test_mask_is_raster_order_prefix(k, mask):
    r = k // 2
    M = conv_mask(k, mask)
    for a in range(k):
        for c in range(k):
            before = (a, c) < (r, r)  # strictly earlier in raster order
            keep = before or (mask == "B" and (a, c) == (r, r))
            assert M[a, c] == keep
    T = n_causal_taps(k, mask)
    assert T == int(M.sum()) == len(causal_taps(k, mask))
    assert kernel_size_from_taps(T, mask) == k
    taps = causal_taps(k, mask)
    assert np.all(taps[:, 0] <= 0)
    assert [tuple(t) for t in taps] == sorted(tuple(t) for t in taps)  # raster order


def test_tap_counts_halve_the_kernel():
    assert [n_causal_taps(k, "A") for k in KS] == [0, 4, 12, 24]
    assert [n_causal_taps(k, "B") for k in KS] == [1, 5, 13, 25]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("mask", "AB")
def test_pack_unpack_round_trip(k, mask):
    rng = np.random.default_rng(k)
    Wf = rng.standard_normal((3, 2, k, k))
    Wp = pack_masked_weight(Wf, mask)
    back = unpack_masked_weight(Wp, mask)
    np.testing.assert_array_equal(back, Wf * conv_mask(k, mask))
    np.testing.assert_array_equal(pack_masked_weight(back, mask), Wp)


# ----------------------------------------------------------------------------- kernel == twin
shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 7), st.integers(1, 7),
                   st.sampled_from(KS), st.sampled_from("AB"), st.integers(0, 2**16))


@given(shapes)
def test_kernel_matches_reference_twin(args):
    N, C_in, C_out, H, W, k, mask, seed = args
    x, Wp, b, dy = _problem(np.random.default_rng(seed), N, C_in, C_out, H, W, k, mask)
    y, cache = masked_conv2d_forward(x, Wp, b, mask)
    assert y.shape == (N, C_out, H, W)
    assert _rel(y, masked_conv2d_forward_reference(x, Wp, b, mask)) <= 1e-13
    dx, dW, db = masked_conv2d_backward(dy, cache)
    rdx, rdW, rdb = masked_conv2d_backward_reference(dy, x, Wp, mask)
    assert dx.shape == x.shape and dW.shape == Wp.shape and db.shape == b.shape
    assert _rel(dx, rdx) <= 1e-13 and _rel(dW, rdW) <= 1e-13 and _rel(db, rdb) <= 1e-13


@given(shapes)
def test_equals_torch_conv2d_with_masked_weight(args):
    from _require import require_torch
    torch = require_torch()
    N, C_in, C_out, H, W, k, mask, seed = args
    x, Wp, b, dy = _problem(np.random.default_rng(seed), N, C_in, C_out, H, W, k, mask)
    y, cache = masked_conv2d_forward(x, Wp, b, mask)
    dx, dW, db = masked_conv2d_backward(dy, cache)
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(np.random.default_rng(seed + 1).standard_normal((C_out, C_in, k, k)), requires_grad=True)
    with torch.no_grad():  # the masked taps hold garbage: the mask must remove them
        Wt.view(-1)[:] = torch.tensor(unpack_masked_weight(Wp, mask)).view(-1) + Wt.view(-1) * torch.tensor(
            1 - conv_mask(k, mask)).repeat(C_out, C_in, 1, 1).view(-1)
    bt = torch.tensor(b, requires_grad=True)
    Mt = torch.tensor(conv_mask(k, mask))
    yt = torch.nn.functional.conv2d(xt, Wt * Mt, bt, padding=k // 2)
    yt.backward(torch.tensor(dy))
    assert _rel(y, yt.detach().numpy()) <= 1e-12
    assert _rel(dx, xt.grad.numpy()) <= 1e-12
    assert _rel(dW, pack_masked_weight(Wt.grad.numpy(), mask)) <= 1e-12
    assert np.all(unpack_masked_weight(pack_masked_weight(Wt.grad.numpy(), mask), mask)
                  == Wt.grad.numpy())  # torch's gradient of a masked tap is 0 too
    assert _rel(db, bt.grad.numpy()) <= 1e-12


@settings(max_examples=20)
@given(shapes, st.booleans())
def test_channels_outermost_layout_gives_the_same_numbers(args, need_dx):
    N, C_in, C_out, H, W, k, mask, seed = args
    x, Wp, b, dy = _problem(np.random.default_rng(seed), N, C_in, C_out, H, W, k, mask)
    y, cache = masked_conv2d_forward(x, Wp, b, mask)
    grads = masked_conv2d_backward(dy, cache, need_dx=need_dx)
    ws = MaskedConvWorkspace()
    yc, cache_c = masked_conv2d_forward(np.ascontiguousarray(x.transpose(1, 0, 2, 3)), Wp, b, mask,
                                        layout="CNHW", workspace=ws)
    assert yc.shape == (C_out, N, H, W)
    assert _rel(yc.transpose(1, 0, 2, 3), y) <= 1e-13
    dxc, dWc, dbc = masked_conv2d_backward(np.ascontiguousarray(dy.transpose(1, 0, 2, 3)), cache_c,
                                           need_dx=need_dx)
    assert _rel(dWc, grads[1]) <= 1e-13 and _rel(dbc, grads[2]) <= 1e-13
    if need_dx:
        assert dxc.shape == (C_in, N, H, W) and _rel(dxc.transpose(1, 0, 2, 3), grads[0]) <= 1e-13
    else:
        assert dxc is None and grads[0] is None


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("layout", ["NCHW", "CNHW"])
@pytest.mark.parametrize("k, mask", [(7, "A"), (3, "B")])
def test_chunked_gather_gives_the_same_numbers(monkeypatch, layout, k, mask, threads, keep):
    """Batches larger than the gather budget run in chunks; the backward redoes each chunk's gather.

    One BLAS thread: chunk after chunk (NCHW: a GEMM per image).  Several: the images are split into
    ranges run on threads of our own, BLAS at one thread each, the weight gradients summed over the
    ranges.  A range whose whole gather is small (``keep``) is one chunk whose gather serves the
    backward.  The BLAS thread count is pinned, not read from the machine.
    """
    import probgen.kernels.masked_conv as mc
    x, Wp, b, dy = _problem(np.random.default_rng(6), 5, 3, 4, 5, 6, k, mask)
    per_image = (3 * n_causal_taps(k, mask) + 1) * 30 * 8
    monkeypatch.setattr(mc._threads, "blas_threads", lambda: threads)
    monkeypatch.setattr(mc, "_CHUNK_BYTES", 2 * per_image)  # chunks of 2, 2 and 1 images (or 2 + 1 per range)
    monkeypatch.setattr(mc, "_KEEP_BYTES", 5 * per_image if keep else 0)
    t = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2, 3))) if layout == "CNHW" else (lambda a: a)
    for n in (5, 1):
        ref_y = masked_conv2d_forward_reference(x[:n], Wp, b, mask)
        ref = masked_conv2d_backward_reference(dy[:n], x[:n], Wp, mask)
        ws = MaskedConvWorkspace()
        y, cache = masked_conv2d_forward(t(x[:n]), Wp, b, mask, layout=layout, workspace=ws)
        ranges = mc._threads.split_ranges(n, min(n, threads))
        longest = max(hi - lo for lo, hi in ranges)
        if keep or longest <= 2:  # every range one chunk: the forward's gathers serve the backward
            kept_ranges, gathers = cache[6]
            assert kept_ranges == ranges and len(gathers) == len(ranges)
            assert ws.get("cols", (3 * n_causal_taps(k, mask) + 1, longest, 30), np.float64) is gathers[0]
        else:
            assert cache[6] is None  # the chunks' gathers are redone in the backward
        dx, dW, db = masked_conv2d_backward(t(dy[:n]), cache)
        assert _rel(t(y), ref_y) <= 1e-13 and _rel(t(dx), ref[0]) <= 1e-13
        assert _rel(dW, ref[1]) <= 1e-13 and _rel(db, ref[2]) <= 1e-13


# ----------------------------------------------------------------------------- causality
@given(st.integers(1, 3), st.integers(2, 6), st.integers(2, 6), st.sampled_from(KS), st.sampled_from("AB"),
       st.integers(0, 2**16))
def test_causality_by_one_hot_backward(C, H, W, k, mask, seed):
    """d y[n, o, i, j] / d x[n', c, i', j'] is 0 unless n' = n and (i', j') is before (i, j) (A) or at it (B)."""
    rng = np.random.default_rng(seed)
    x, Wp, b, _ = _problem(rng, 2, C, 2, H, W, k, mask)
    Wp += np.sign(Wp)  # no tap near 0: every allowed dependency is visible
    i, j, o, n = rng.integers(H), rng.integers(W), rng.integers(2), rng.integers(2)
    y, cache = masked_conv2d_forward(x, Wp, b, mask)
    dy = np.zeros_like(y)
    dy[n, o, i, j] = 1.0
    dx, _, _ = masked_conv2d_backward(dy, cache)
    raster = np.arange(H * W).reshape(H, W)
    t = raster[i, j]
    allowed = (raster < t) | ((raster == t) & (mask == "B"))
    assert np.all(dx[1 - n] == 0)
    assert np.all(dx[n][:, ~allowed] == 0)
    r = k // 2
    near = (np.abs(np.arange(H)[:, None] - i) <= r) & (np.abs(np.arange(W)[None, :] - j) <= r)
    assert np.all(dx[n][:, allowed & near] != 0)  # and every causal tap inside the kernel is used


# ----------------------------------------------------------------------------- special cases
def test_mask_a_1x1_is_the_bias_alone():
    x, Wp, b, dy = _problem(np.random.default_rng(0), 2, 3, 4, 5, 5, 1, "A")
    assert Wp.shape == (4, 3, 0)
    y, cache = masked_conv2d_forward(x, Wp, b, "A")
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], y.shape))
    dx, dW, db = masked_conv2d_backward(dy, cache)
    assert np.all(dx == 0) and dW.shape == (4, 3, 0)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-13)


@pytest.mark.parametrize("k, mask", [(7, "A"), (3, "B"), (1, "B")])
def test_float32_is_preserved_and_close_to_float64(k, mask):
    x, Wp, b, dy = _problem(np.random.default_rng(1), 3, 4, 5, 6, 7, k, mask)
    y64, c64 = masked_conv2d_forward(x, Wp, b, mask)
    g64 = masked_conv2d_backward(dy, c64)
    f = [a.astype(np.float32) for a in (x, Wp, b, dy)]
    y32, c32 = masked_conv2d_forward(*f[:3], mask)
    g32 = masked_conv2d_backward(f[3], c32)
    assert y32.dtype == np.float32 and all(g.dtype == np.float32 for g in g32)
    assert _rel(y32, y64) < 1e-5 and all(_rel(a, b) < 1e-5 for a, b in zip(g32, g64))


@pytest.mark.parametrize("k, mask", [(7, "A"), (3, "B"), (1, "B")])
def test_workspace_reuses_buffers_and_gives_the_same_numbers(k, mask):
    rng = np.random.default_rng(2)
    ws = MaskedConvWorkspace()
    first = None
    for _ in range(3):
        x, Wp, b, dy = _problem(rng, 3, 2, 4, 5, 6, k, mask)
        y, cache = masked_conv2d_forward(x, Wp, b, mask, workspace=ws)
        y_ref = y.copy()
        dx, dW, db = masked_conv2d_backward(dy, cache)
        ry, rc = masked_conv2d_forward(x, Wp, b, mask)
        np.testing.assert_array_equal(y_ref, ry)
        for a, r in zip((dx, dW, db), masked_conv2d_backward(dy, rc)):
            np.testing.assert_array_equal(a, r)
        if first is None:
            first, nbytes = (y, dx), ws.nbytes()
        assert y is first[0] and dx is first[1] and ws.nbytes() == nbytes  # nothing new allocated


def test_need_dx_false_skips_the_input_gradient():
    x, Wp, b, dy = _problem(np.random.default_rng(3), 2, 1, 3, 4, 4, 7, "A")
    _, cache = masked_conv2d_forward(x, Wp, b, "A")
    dx, dW, db = masked_conv2d_backward(dy, cache, need_dx=False)
    _, rdW, rdb = masked_conv2d_backward_reference(dy, x, Wp, "A")
    assert dx is None and _rel(dW, rdW) < 1e-13 and _rel(db, rdb) < 1e-13


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_clear_errors():
    x, Wp, b, dy = _problem(np.random.default_rng(4), 2, 2, 3, 4, 4, 3, "B")
    with pytest.raises(ValueError, match="mask_type"):
        masked_conv2d_forward(x, Wp, b, "C")
    with pytest.raises(ValueError, match=r"\(N, C_in, H, W\)"):
        masked_conv2d_forward(x[0], Wp, b, "B")
    with pytest.raises(ValueError, match="packed"):
        masked_conv2d_forward(x, unpack_masked_weight(Wp, "B"), b, "B")
    with pytest.raises(ValueError, match="input channels"):
        masked_conv2d_forward(x[:, :1], Wp, b, "B")
    with pytest.raises(ValueError, match="b must have shape"):
        masked_conv2d_forward(x, Wp, b[:2], "B")
    with pytest.raises(ValueError, match="taps"):
        masked_conv2d_forward(x, Wp[:, :, :3], b, "B")
    with pytest.raises(ValueError, match="taps"):  # 5 taps is mask B 3x3, not any mask A
        masked_conv2d_forward(x, Wp, b, "A")
    with pytest.raises(TypeError, match="dtype"):
        masked_conv2d_forward(x.astype(np.float32), Wp, b, "B")
    with pytest.raises(TypeError, match="float32 or float64"):
        masked_conv2d_forward(x.astype(np.int64), Wp, b, "B")
    with pytest.raises(ValueError, match="odd"):
        conv_mask(4, "A")
    _, cache = masked_conv2d_forward(x, Wp, b, "B")
    with pytest.raises(ValueError, match="shape of the forward output"):
        masked_conv2d_backward(dy[:, :2], cache)
    with pytest.raises(TypeError, match="dtype"):
        masked_conv2d_backward(dy.astype(np.float32), cache)
    with pytest.raises(TypeError, match="cache"):
        masked_conv2d_backward(dy, ("linear", x))
    with pytest.raises(ValueError, match="layout"):
        masked_conv2d_forward(x, Wp, b, "B", layout="NHWC")
    with pytest.raises(ValueError, match=r"\(C_in, N, H, W\) has 1"):
        masked_conv2d_forward(x[:1], Wp, b, "B", layout="CNHW")  # NCHW data given as CNHW


def test_a_cache_serves_one_backward_of_the_latest_forward():
    x, Wp, b, dy = _problem(np.random.default_rng(5), 2, 2, 3, 4, 4, 3, "B")
    ws = MaskedConvWorkspace()
    _, old = masked_conv2d_forward(x, Wp, b, "B", workspace=ws)
    _, new = masked_conv2d_forward(x, Wp, b, "B", workspace=ws)
    with pytest.raises(ValueError, match="another forward"):
        masked_conv2d_backward(dy, old)
    masked_conv2d_backward(dy, new)
    with pytest.raises(ValueError, match="already used"):
        masked_conv2d_backward(dy, new)


# ----------------------------------------------------------------------------- private kernels == twins
def test_fused_relu_kernels_match_their_numpy_twins():
    from probgen.kernels import _masked_conv_kernels as K
    rng = np.random.default_rng(7)
    for dt in (np.float64, np.float32):
        d, t = (rng.standard_normal((3, 10)).astype(dt) for _ in range(2))
        y = rng.standard_normal((4, 25)).astype(dt)  # wider and taller than the chunk: offset j0 = 7
        y[0, 7] = 0.0  # the kink: gradient 0, as torch
        got = d.copy()
        K.relu_grad_(got, y, 7)
        np.testing.assert_array_equal(got, K.relu_grad_reference(d, y, 7))
        assert got[0, 0] == 0 and got.dtype == dt
        acc = t.copy()
        K.relu_grad_add_(acc, d, y, 7)
        np.testing.assert_array_equal(acc, K.relu_grad_add_reference(t, d, y, 7))
        h, a = d.copy(), y.copy()
        K.residual_relu_(h, t, a, 7)
        rh, ra = K.residual_relu_reference(d, t, y, 7)
        np.testing.assert_array_equal(h, rh)
        np.testing.assert_array_equal(a, ra)  # rows and columns outside the chunk untouched
        assert np.all(a[:3, 7:17] >= 0)
        z = y.copy()
        z[1, 9] = np.nan  # a diverged value stays visible
        r = z.copy()
        K.relu_(r, 3, 7, 10)
        np.testing.assert_array_equal(r, K.relu_reference(z, 3, 7, 10))
        assert np.isnan(r[1, 9]) and np.array_equal(r[3], z[3]) and np.array_equal(r[:, :7], z[:, :7])


@pytest.mark.parametrize("C_out, K", [(4, 9), (9, 4), (5, 5), (64, 25)])
def test_weight_gradient_gemms_in_either_orientation(C_out, K):
    """Every way of forming the weight gradient: either orientation, and (64 x 25, per image) split in two."""
    from probgen.kernels import _masked_conv_kernels as Kn
    rng = np.random.default_rng(C_out * K)
    dY, X = rng.standard_normal((3, C_out, 11)), rng.standard_normal((3, K, 11))
    shape = (K, C_out) if Kn.dw_transposed(C_out, K) else (C_out, K)
    acc, tmp = np.empty(shape), np.empty(shape)
    for i in range(3):
        Kn.accumulate_dw(acc, dY[i], X[i], i == 0, tmp)
    want = np.einsum("nol,nkl->ok", dY, X)
    assert Kn._split(C_out, K, 11) == ((C_out, K) == (64, 25))
    got = acc.T if Kn.dw_transposed(C_out, K) else acc
    assert _rel(got, want) <= 1e-14
    parts = np.empty((2,) + shape)
    Kn.accumulate_dw_stacked(acc, dY[:2], X[:2], True, parts, tmp)
    Kn.accumulate_dw_stacked(acc, dY[2:], X[2:], False, parts[:1], tmp)
    assert _rel(acc.T if Kn.dw_transposed(C_out, K) else acc, want) <= 1e-14


@pytest.mark.parametrize("C_out, K", [(64, 25), (64, 65), (8, 25)])
def test_forward_product_whole_or_in_halves(C_out, K):
    """``forward_product`` equals ``W @ X`` whether it runs as one product or as two of C_out / 2 rows."""
    from probgen.kernels import _masked_conv_kernels as Kn
    rng = np.random.default_rng(K)
    W, X = rng.standard_normal((C_out, K)), rng.standard_normal((3, K, 11))
    out = np.full((3, C_out, 11), np.nan)
    Kn.forward_product(W, X, out)
    assert Kn._halves(C_out, K, 11) == ((C_out, K) == (64, 25))
    assert _rel(out, W @ X) <= 1e-15


def test_blas_threads_follows_threadpool_limits():
    from threadpoolctl import threadpool_limits

    from probgen.kernels._threads import blas_threads
    with threadpool_limits(1, user_api="blas"):
        assert blas_threads() == 1
    with threadpool_limits(2, user_api="blas"):
        assert blas_threads() == 2
