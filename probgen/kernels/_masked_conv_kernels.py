"""The compiled half of :mod:`probgen.kernels.masked_conv`: causal im2col / col2im, fused ReLU passes.

Serial Numba kernels (Numba's parallel workers next to BLAS steal its cores, PERFORMANCE.md), each
with a NumPy ``*_reference`` twin that the tests compare against, and :func:`accumulate_dw`, the
weight-gradient GEMM of one chunk.  Private: the public functions in ``masked_conv`` and the
PixelCNN network (``probgen.models.pixelcnn``) call them on chunks of images.

Activations here are 2-D (channels, columns) arrays, a column being one pixel of one image
(the "CNHW" layout flattened: column ``n*H*W + i*W + j``).  The fused kernels take the
chunk's working arrays (C-contiguous, ``L`` columns) and the full-width saved activation
together with the chunk's first column ``j0``, so no strided view is ever passed to Numba.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import _simd

__all__ = []  # private module


# ----------------------------------------------------------------------------- causal im2col / col2im
@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _zero_outside(plane, H, Wd, off, dj):  # pragma: no cover - compiled
    """Zero the entries of a flat (H*W,) tap plane whose source pixel is outside the image.

    The source of entry ``p = i*W + j`` is flat position ``p + off`` (``off = di*W + dj``):
    outside when ``p + off`` leaves [0, HW) or when ``j + dj`` leaves [0, W) (a row wrap).
    """
    HW = H * Wd
    lo = min(HW, max(0, -off))
    hi = max(lo, HW - max(0, off))
    for p in range(lo):
        plane[p] = 0
    for p in range(hi, HW):
        plane[p] = 0
    if dj < 0:  # the first -dj columns of every row (element writes: a 1-element slice costs more)
        n = min(Wd, -dj)
        for i in range(H):
            for q in range(i * Wd, i * Wd + n):
                plane[q] = 0
    elif dj > 0:  # the last dj columns
        n = max(0, Wd - dj)
        for i in range(H):
            for q in range(i * Wd + n, (i + 1) * Wd):
                plane[q] = 0


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _tap_span(taps, t, Wd, HW):  # pragma: no cover - compiled
    """Tap ``t``'s column shift ``dj``, flat shift ``off = di*W + dj`` and the output range [lo, hi) whose source is in the image."""
    dj = taps[t, 1]
    off = taps[t, 0] * Wd + dj
    lo = min(HW, max(0, -off))
    return dj, off, lo, max(lo, HW - max(0, off))


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def im2col(x3, cn, s, m, Wd, taps, cols):  # pragma: no cover - compiled
    """cols[c*T + t, n - s, i*W + j] = x[n, c, i + di_t, j + dj_t] (0 outside)  [eq:masked-conv].

    ``x3`` is (N, C, HW) or, with ``cn``, (C, N, HW), C-contiguous; images ``s .. s+m-1``.
    Each tap is one flat copy shifted by ``off = di*W + dj`` (a long loop over views, so the
    indices are provably non-negative and it vectorises), then the entries that wrapped around
    a row edge or fell off the image are zeroed.  Rows ``C*T`` and beyond are not touched.
    """
    C = x3.shape[0] if cn else x3.shape[1]
    HW = x3.shape[2]
    H = HW // Wd
    T = taps.shape[0]
    for n in range(m):
        for c in range(C):
            src = x3[c, s + n] if cn else x3[s + n, c]
            for t in range(T):
                dj, off, lo, hi = _tap_span(taps, t, Wd, HW)
                dst = cols[c * T + t, n]
                a = src[lo + off:hi + off]
                b = dst[lo:hi]
                for p in range(hi - lo):
                    b[p] = a[p]
                _zero_outside(dst, H, Wd, off, dj)


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def col2im(cols, taps, dx3, cn, s, m, Wd):  # pragma: no cover - compiled
    """dx[n, c, i, j] = sum_t dcols[c*T + t, n - s, (i - di_t) W + (j - dj_t)]  [eq:masked-conv-backward-x].

    The overlap-add of the tap planes into ``dx3`` ((N, C, HW), or (C, N, HW) with ``cn``):
    entries whose source pixel is outside the image are zeroed in ``cols`` (it is scratch),
    then each plane is added with one flat shifted loop.
    """
    C = dx3.shape[0] if cn else dx3.shape[1]
    HW = dx3.shape[2]
    H = HW // Wd
    T = taps.shape[0]
    for n in range(m):
        for c in range(C):
            dst = dx3[c, s + n] if cn else dx3[s + n, c]
            dst[:] = 0
            for t in range(T):
                dj, off, lo, hi = _tap_span(taps, t, Wd, HW)
                plane = cols[c * T + t, n]
                _zero_outside(plane, H, Wd, off, dj)
                a = plane[lo:hi]
                b = dst[lo + off:hi + off]
                for p in range(hi - lo):
                    b[p] += a[p]


# ----------------------------------------------------------------------------- fused ReLU passes
@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def relu_grad_(d, y, j0):  # pragma: no cover - compiled
    """In place: ``d[r, p] = d[r, p] * (y[r, j0 + p] > 0)`` for a ReLU output ``y`` (0 at the kink, as torch) ``[eq:relu]``.

    ``d`` is a chunk (R, L); ``y`` is the saved activation, (R', width) with R' >= R.  A select,
    so the loop vectorises and no boolean mask is allocated.
    """
    L = d.shape[1]
    for r in range(d.shape[0]):
        dr = d[r]
        yr = y[r, j0:j0 + L]
        for p in range(L):
            dr[p] = dr[p] if yr[p] > 0 else 0


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def relu_grad_add_(acc, d, y, j0):  # pragma: no cover - compiled
    """In place: ``acc[r, p] += d[r, p] * (y[r, j0 + p] > 0)``: a ReLU's backward added into a running gradient."""
    L = d.shape[1]
    for r in range(d.shape[0]):
        ar = acc[r]
        dr = d[r]
        yr = y[r, j0:j0 + L]
        for p in range(L):
            ar[p] += dr[p] if yr[p] > 0 else 0


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def residual_relu_(h, t, a, j0):  # pragma: no cover - compiled
    """In place: ``h += t`` (a residual update), then ``a[r, j0 + p] = max(h[r, p], 0)`` (the next ReLU) ``[eq:relu]``.

    ``h`` and ``t`` are chunks (R, L); ``a`` is (R', width), R' >= R.  One pass instead of two.
    """
    L = h.shape[1]
    for r in range(h.shape[0]):
        hr = h[r]
        tr = t[r]
        ar = a[r, j0:j0 + L]
        for p in range(L):
            v = hr[p] + tr[p]
            hr[p] = v
            ar[p] = 0 if v < 0 else v


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def relu_(a, rows, j0, L):  # pragma: no cover - compiled
    """In place: ``a[r, j0:j0 + L] = max(a[r, j0:j0 + L], 0)`` for ``r < rows`` ``[eq:relu]`` (NaN stays NaN).

    The ReLU of a chunk of a saved activation, one row slice at a time: NumPy's ufunc on the
    strided (rows, L) view took twice as long.
    """
    for r in range(rows):
        ar = a[r, j0:j0 + L]
        for p in range(L):
            v = ar[p]
            ar[p] = 0 if v < 0 else v


def relu_reference(a, rows, j0, L):
    """NumPy twin of :func:`relu_` (returns the new ``a``)."""
    a = a.copy()
    np.maximum(a[:rows, j0:j0 + L], 0, out=a[:rows, j0:j0 + L])
    return a


def relu_grad_reference(d, y, j0):
    """NumPy twin of :func:`relu_grad_` (returns the new ``d``)."""
    R, L = d.shape
    return np.where(y[:R, j0:j0 + L] > 0, d, 0).astype(d.dtype)


def relu_grad_add_reference(acc, d, y, j0):
    """NumPy twin of :func:`relu_grad_add_` (returns the new ``acc``)."""
    return acc + relu_grad_reference(d, y, j0)


def residual_relu_reference(h, t, a, j0):
    """NumPy twin of :func:`residual_relu_`: returns the new ``(h, a)``."""
    h = h + t
    a = a.copy()
    a[:h.shape[0], j0:j0 + h.shape[1]] = np.maximum(h, 0)
    return h, a


# ----------------------------------------------------------------------------- weight-gradient GEMM
_SPLIT = 16  # rows of the first block of a split weight-gradient product
_SPLIT_MAX_L = 4096  # columns (pixels) of a product that may be split: per image, not whole batches


def dw_transposed(C_out, K) -> bool:
    """Whether :func:`accumulate_dw` keeps the gradient transposed, (K, C_out).

    OpenBLAS is faster (single thread, 28x28 chunks: 80 vs 57 GFLOP/s at 32 x 161) when the
    longer of the two sides is the rows of the result, so the orientation follows the shape.
    """
    return K > C_out


def _split(C_out, K, L) -> bool:
    """Whether ``dY X^T`` (C_out x K) is formed as ``(X dY^T)^T`` in two row blocks of X, rows 0-15 and the rest.

    Measured at one thread, per image of a batch of 32 28x28 images (L = 784; OpenBLAS 0.3.31, SkylakeX
    kernel; ms for the batch): with C_out = 64 and K = 20 / 25 / 28, one product took 0.92 / 1.19 / 1.20 in
    the better orientation and the split pair 0.79 / 0.97 / 0.92; at K = 17 or 32, with C_out = 32, or over
    a whole batch at once (L = 25088) splitting was slower.  K = 25 is the 7x7 mask-A input layer (24 taps
    and the bias).
    """
    return C_out >= 64 and 20 <= K <= 28 and L <= _SPLIT_MAX_L


def _halves(C_out, K, L) -> bool:
    """Whether the forward product ``W X`` (C_out x K)(K x L) runs as two products of C_out / 2 rows each.

    Measured at one thread, per image of a batch of 32 28x28 images (same library; ms for the batch): with
    C_out = 64 and K = 13 / 20 / 25 / 28 / 33, one product took 0.64 / 0.66 / 0.76 / 0.86 / 0.91 and the two
    halves 0.40 / 0.54 / 0.64 / 0.74 / 0.80; at K = 5 they tie, at K = 65 or with C_out = 128 the halves were
    slower.  The 7x7 mask-A input layer has C_out = 64 and K = 25.
    """
    return C_out == 64 and 13 <= K <= 33 and L <= _SPLIT_MAX_L


def forward_product(Wb, X, out, tiles=False):
    """``out = Wb X`` ``[eq:masked-conv]``: ``Wb`` (C_out, K) = ``[W | b]``, ``X`` (..., K, L) a gather whose last
    row is the ones of the bias, ``out`` (..., C_out, L); as one product, (:func:`_halves`) as two of C_out / 2
    rows, or (``tiles`` and :func:`._simd.applies`) by register-blocked SIMD tiles that start from the bias
    instead of reading the ones row (the layer functions ask for them; the PixelCNN network, whose input layer
    measured no faster with them, does not)."""
    C_out, K = Wb.shape
    if tiles and _simd.applies(C_out, K, X.shape[-1], X.dtype):  # register-blocked tiles instead of BLAS
        _simd.forward_product(Wb, X, out)
    elif _halves(C_out, K, X.shape[-1]):
        h = C_out // 2
        np.matmul(Wb[:h], X, out=out[..., :h, :])
        np.matmul(Wb[h:], X, out=out[..., h:, :])
    else:
        np.matmul(Wb, X, out=out)


def _split_product_T(dY, X, out_T):
    """``out_T = X dY^T`` (K x C_out) in two row blocks (stacked or not: the last two axes are the matrices)."""
    K = X.shape[-2]
    for r0, r1 in ((0, _SPLIT), (_SPLIT, K)):
        np.matmul(X[..., r0:r1, :], np.swapaxes(dY, -1, -2), out=out_T[..., r0:r1, :])


def accumulate_dw(acc, dY, X, first, tmp=None, tiles=False):
    """``acc (+)= dY X^T`` ``[eq:masked-conv-backward-w]``, or its transpose ``X dY^T`` when ``acc`` is (K, C_out).

    ``dY`` is (C_out, L), ``X`` (K, L) (rows of a gather, or an activation with a ones row for the
    bias); ``first`` overwrites instead of adding; ``tmp`` (the shape of ``acc``) avoids an allocation.
    """
    (C_out, L), K = dY.shape, X.shape[0]
    if tiles and _simd.applies(C_out, K, L, dY.dtype):  # register-blocked tiles instead of BLAS
        _simd.accumulate_dw(acc.T if dw_transposed(C_out, K) else acc, dY, X, first)
        return
    out = acc if first else tmp
    if dw_transposed(C_out, K):
        np.matmul(X, dY.T, out=out)
    elif _split(C_out, K, L):
        out_T = np.empty((K, C_out), dY.dtype)
        _split_product_T(dY, X, out_T)
        out[...] = out_T.T
    else:
        np.matmul(dY, X.T, out=out)
    if not first:
        acc += tmp


def accumulate_dw_stacked(acc, dY3, X3, first, parts, tmp, tiles=False):
    """:func:`accumulate_dw` summed over a stack of images: ``dY3`` (m, C_out, L), ``X3`` (m, K, L).

    One call (two when split) runs the m per-image GEMMs into ``parts`` (m, *acc.shape), then sums them.
    """
    m, C_out, L = dY3.shape
    K = X3.shape[1]
    if tiles and _simd.applies(C_out, K, L, dY3.dtype):  # register-blocked tiles instead of BLAS
        _simd.accumulate_dw(acc.T if dw_transposed(C_out, K) else acc, dY3, X3, first)
        return
    if dw_transposed(C_out, K):
        np.matmul(X3, dY3.transpose(0, 2, 1), out=parts)
    elif _split(C_out, K, L):  # into the same memory viewed as (m, K, C_out), summed, then transposed
        parts_T = parts.reshape(m, K, C_out)
        _split_product_T(dY3, X3, parts_T)
        total = parts_T.sum(axis=0).T
        if first:
            acc[...] = total
        else:
            acc += total
        return
    else:
        np.matmul(dY3, X3.transpose(0, 2, 1), out=parts)
    if first:
        np.sum(parts, axis=0, out=acc)
    else:
        acc += np.sum(parts, axis=0, out=tmp)
