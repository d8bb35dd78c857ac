"""Masked (causal) 2-D convolution for PixelCNN: Numba gathers feeding BLAS, beside NumPy twins.

Stride 1, "same" zero padding, NCHW (or CNHW) activations.  A masked convolution is an ordinary
convolution whose :math:`k \\times k` weight is multiplied by a fixed 0/1 mask ``[eq:masked-conv]``:
mask A keeps only the taps strictly before the centre in raster order ``[eq:mask-a]``,
mask B also keeps the centre ``[eq:mask-b]`` (``docs/pixelcnn.md``).

**Weight layout (packed).**  Only the causal taps are stored: ``W`` has shape
(C_out, C_in, T), tap ``t`` at the offset ``causal_taps(k, mask_type)[t] = (di, dj)``
(raster order; ``di <= 0``).  :math:`T = r(k+1)` for mask A and :math:`r(k+1) + 1` for
mask B, :math:`r = (k-1)/2` (4 / 5 taps of 9 for 3x3, 24 / 25 of 49 for 7x7), and ``T``
determines ``k``.  So masked taps are not parameters at all: they cannot drift, the
optimiser does not visit them, and a parameter count is honest.
:func:`pack_masked_weight` / :func:`unpack_masked_weight` convert from / to the dense
(C_out, C_in, k, k) layout of ``torch.nn.functional.conv2d`` (masked taps 0).

**Kernel.**  Nothing multiplies by a zero tap.  For a chunk of images a serial Numba *causal
im2col* gathers the T shifted copies of every input channel (zeros outside the image) into a
buffer of shape (C_in T + 1, images, H W) whose last row is ones, and GEMMs give
:math:`Y = [W \\,|\\, b]\\,\\mathrm{cols}` with the bias.  The backward pass forms
:math:`dW = dY\\,\\mathrm{cols}^\\top` (its last column is ``db``) ``[eq:masked-conv-backward-w]``,
then :math:`W^\\top dY` over the same buffer, whose shifted planes are added back into :math:`dX`
(col2im) ``[eq:masked-conv-backward-x]``.  1x1 mask-B convolutions (pointwise) skip the gather.
A 3x3 mask-B layer with at least 16 input channels and an even width runs Winograd's F(2,3) + F(2,2)
instead (:mod:`probgen.kernels._winograd`, ``[eq:winograd-f23]``): 7 products per pair of outputs instead
of 10, 24 -> 20 ms for the 64 -> 64 layer of a batch of 32 at one thread (each chunk one compiled call
into NumPy's own CBLAS where it has one).
The compiled parts live in :mod:`probgen.kernels._masked_conv_kernels`; they are serial on
purpose (Numba's parallel workers next to BLAS steal its cores, PERFORMANCE.md).

**Chunks and threads.**  A chunk's gather is about 1 MiB, so gather, GEMMs and col2im run in L2
with one BLAS thread; the backward redoes each chunk's gather (cheaper than keeping all of them) unless
the whole gather of each image range takes at most 4 MiB (e.g. the 7x7 1 -> 64 input layer of a batch of
32 28x28 images, 2.5 MiB): then each range is one chunk, kept for the backward,
NCHW runs one GEMM per image straight into ``y[n]`` / from ``dy[n]``, and :math:`dW` is formed in
whichever orientation OpenBLAS runs faster.  With T > 1 BLAS threads the images are split into T
contiguous ranges, each run chunk by chunk as above on a thread of our own while BLAS is held at one
thread (every compiled kernel releases the GIL; each range has its own gather buffer and weight-
gradient sum, added in range order): the 3x3 64 -> 64 layer went from 25 to 18 ms at two threads
(37 ms at one).

**Layouts.**  ``layout="NCHW"`` (the default) takes and returns (N, C, H, W) arrays;
``layout="CNHW"`` ((C, N, H, W), channels outermost, as :class:`probgen.models.PixelCNN`
keeps its activations) writes each chunk's GEMM straight into a column block of ``y``.  For
one channel both layouts are the same memory.

**Buffers.**  With a :class:`MaskedConvWorkspace` the gather buffer, the output and ``dx``
are reused from call to call (nothing large is allocated after the first call); the
returned ``y`` / ``dx`` then live in the workspace and are overwritten by its next call.
The cache holds the workspace's gather and ``x`` itself: the backward runs at most once per
forward, for the latest forward of its workspace (both checked), and ``x`` must not change
in between (as with any saved activation).

Single-channel images need no channel split: the PixelCNN paper's R/G/B masks divide the
channels of colour images into groups; for one channel (binary or grey levels) the spatial
masks above are the whole story.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_option
from . import _masked_conv_kernels as _k
from . import _simd, _threads
from . import _winograd as _wino
from ._masked_conv_taps import (
    _MASKS,
    _taps,
    causal_taps,
    conv_mask,
    kernel_size_from_taps,
    n_causal_taps,
    pack_masked_weight,
    unpack_masked_weight,
)

__all__ = [
    "causal_taps",
    "conv_mask",
    "n_causal_taps",
    "kernel_size_from_taps",
    "pack_masked_weight",
    "unpack_masked_weight",
    "MaskedConvWorkspace",
    "masked_conv2d_forward",
    "masked_conv2d_backward",
    "masked_conv2d_forward_reference",
    "masked_conv2d_backward_reference",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_LAYOUTS = ("NCHW", "CNHW")
_SHAPES = {"NCHW": "(N, C_in, H, W)", "CNHW": "(C_in, N, H, W)"}
_CHUNK_BYTES = 1 << 20  # gather buffer budget: 1 MiB, so a chunk's gather, GEMMs and col2im stay in L2 (see docs)
_WINOGRAD_MIN_CHANNELS = 16  # a 3x3 mask-B layer with this many input channels (and an even width) runs Winograd
_KEEP_BYTES = 1 << 22  # a range of images whose whole gather takes at most 4 MiB is one chunk, kept for the backward


# ----------------------------------------------------------------------------- workspace
class MaskedConvWorkspace:
    """Named buffers reused across calls of one convolution layer (reallocated on a new shape)."""

    def __init__(self):
        self._buffers: dict[str, np.ndarray] = {}
        self.generation = 0  # forward calls so far: a cache is valid only for the latest one

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A buffer of this shape and dtype (contents undefined), allocated only when it changes."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = np.empty(shape, dtype)
            self._buffers[name] = buf
        return buf

    def nbytes(self) -> int:
        return int(sum(b.nbytes for b in self._buffers.values()))


def _chunk(N, bytes_per_image):
    """Images per gather for a range of N: all N when their gather is small (``_KEEP_BYTES``: gathered once,
    kept for the backward), else a buffer near the L2 size (redone in the backward, cheaper than keeping it)."""
    if N * bytes_per_image <= _KEEP_BYTES:
        return int(N)
    return int(min(N, max(1, _CHUNK_BYTES // max(1, bytes_per_image))))


def _tick(ws):
    if ws is None:
        return 0
    ws.generation += 1
    return ws.generation


def _buffer(ws, name, shape, dtype):
    return np.empty(shape, dtype) if ws is None else ws.get(name, shape, dtype)


def _gather_buffer(ws, K, nb, HW, dtype, name="cols"):
    """The (K + 1, nb, HW) gather buffer, its last row (the bias's) set to ones."""
    cols = _buffer(ws, name, (K + 1, nb, HW), dtype)
    cols[K] = 1
    return cols


# ----------------------------------------------------------------------------- checks
def _float(a, name):
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    return a


def _check_forward_args(x, W, b, mask_type, layout="NCHW"):
    mask_type = check_option(mask_type, "mask_type", _MASKS)
    layout = check_option(layout, "layout", _LAYOUTS)
    x, W, b = _float(x, "x"), _float(W, "W"), _float(b, "b")
    if x.ndim != 4:
        raise ValueError(f"x must have shape {_SHAPES[layout]}, got {x.shape}")
    if W.ndim != 3:
        raise ValueError(f"W must be the packed weight of shape (C_out, C_in, T), got {W.shape} "
                         "(use pack_masked_weight for a dense (C_out, C_in, k, k) weight)")
    C_in = x.shape[1] if layout == "NCHW" else x.shape[0]
    if W.shape[1] != C_in:
        raise ValueError(f"W has C_in = {W.shape[1]} input channels but x {_SHAPES[layout]} has {C_in} "
                         f"(shape {x.shape})")
    if b.shape != (W.shape[0],):
        raise ValueError(f"b must have shape ({W.shape[0]},), got {b.shape}")
    for name, a in (("W", W), ("b", b)):
        if a.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but x has {x.dtype}; convert once with .astype")
    k = kernel_size_from_taps(W.shape[2], mask_type)
    return np.ascontiguousarray(x), np.ascontiguousarray(W), b, mask_type, k, layout


# ----------------------------------------------------------------------------- forward / backward
def masked_conv2d_forward(x, W, b, mask_type, *, workspace=None, layout="NCHW"):
    """Masked convolution, stride 1, zero "same" padding ``[eq:masked-conv]``.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), float32 or float64
        Or (C_in, N, H, W) with ``layout="CNHW"``.
    W : ndarray of shape (C_out, C_in, T)
        Packed causal taps (:func:`causal_taps` order), same dtype as ``x``.
    b : ndarray of shape (C_out,)
    mask_type : {"A", "B"}
        A: the output at (i, j) sees only pixels strictly before (i, j) in raster order
        ``[eq:mask-a]``; B: also (i, j) itself ``[eq:mask-b]``.
    workspace : MaskedConvWorkspace or None
        Reuse its buffers; ``y`` is then a workspace buffer, valid until its next forward.
    layout : {"NCHW", "CNHW"}
        Of ``x`` and ``y``.  "CNHW" (channels outermost) lets every GEMM span the whole
        chunk of images and write ``y`` in place; "NCHW" runs one GEMM per image into ``y[n]``.

    Returns
    -------
    y : ndarray of shape (N, C_out, H, W), or (C_out, N, H, W) for "CNHW"; dtype of ``x``
        :math:`y_{n,o,i,j} = b_o + \\sum_{c,t} W_{o,c,t}\\, x_{n,c,i+di_t,j+dj_t}`.
    cache : tuple
        For :func:`masked_conv2d_backward` (once).
    """
    x, W, b, mask_type, k, layout = _check_forward_args(x, W, b, mask_type, layout)
    cn = layout == "CNHW"
    C_out, C_in, T = W.shape
    N, H, Wd = (x.shape[1] if cn else x.shape[0]), x.shape[2], x.shape[3]
    HW, K = H * Wd, C_in * T
    y = _buffer(workspace, "y", (C_out, N, H, Wd) if cn else (N, C_out, H, Wd), x.dtype)
    cache = ["masked_conv2d", x, W, mask_type, layout, None, None, workspace, _tick(workspace)]
    if k == 1 and mask_type == "B":  # pointwise: no gather
        if cn:  # one GEMM for the batch
            y2 = y.reshape(C_out, N * HW)
            np.matmul(W.reshape(C_out, C_in), x.reshape(C_in, N * HW), out=y2)  # [eq:masked-conv]
            y2 += b[:, None]
        else:  # one GEMM per image
            y3 = y.reshape(N, C_out, HW)
            np.matmul(W.reshape(C_out, C_in), x.reshape(N, C_in, HW), out=y3)  # [eq:masked-conv]
            y3 += b[:, None]
        return y, cache
    taps = _taps(k, mask_type)
    if _winograd_applies(k, mask_type, C_in, Wd):
        cache[5:7] = taps, "winograd"
        _forward_winograd(x, W, b, cn, N, H, Wd, y, workspace)
        return y, cache
    Wb = np.empty((C_out, K + 1), x.dtype)
    Wb[:, :K] = W.reshape(C_out, K)
    Wb[:, K] = b
    x3 = x.reshape(x.shape[0], x.shape[1], HW)
    ranges = _threads.split_ranges(N, min(N, _threads.blas_threads()))  # one range, or one per BLAS thread (own threads)
    longest = max(hi - lo for lo, hi in ranges)
    nb = _chunk(longest, (K + 1) * HW * x.itemsize)
    gathers = [None] * len(ranges)

    def job(lo, hi, w):
        gathers[w] = cols = _gather_buffer(workspace, K, nb, HW, x.dtype, "cols" if w == 0 else f"cols{w}")
        for s in range(lo, hi, nb):
            _forward_chunk(x3, cn, s, min(hi, s + nb) - s, Wd, taps, cols, Wb, y, N, HW)

    _threads.run_ranges(job, ranges)
    # every range one chunk: the backward reuses the gathers (with the forward's ranges); otherwise it regathers
    cache[5:7] = taps, ((ranges, gathers) if nb >= longest else None)
    return y, cache


def _forward_chunk(x3, cn, s, m, Wd, taps, cols, Wb, y, N, HW):
    """Images ``s .. s+m-1`` with one BLAS thread: gather, then the GEMM straight into ``y`` ``[eq:masked-conv]``."""
    C_out, K1 = Wb.shape
    nb = cols.shape[1]
    _k.im2col(x3, cn, s, m, Wd, taps, cols)
    if cn:  # the column block of y: one product (no halves: they were measured per image), or the SIMD tiles
        Xc, Yc = cols.reshape(K1, nb * HW)[:, :m * HW], y.reshape(C_out, N * HW)[:, s * HW:(s + m) * HW]
        if _simd.applies(C_out, K1, HW, Wb.dtype):
            _simd.forward_product(Wb, Xc, Yc)
        else:
            np.matmul(Wb, Xc, out=Yc)
    else:  # one GEMM per image, into y[n]
        _k.forward_product(Wb, cols[:, :m].transpose(1, 0, 2), y.reshape(N, C_out, HW)[s:s + m], tiles=True)


def _backward_chunk(x3, dy, cn, s, m, Wd, taps, cols, WT, acc, tmp, parts, first, dx3, regather):
    """Images ``s .. s+m-1`` with one BLAS thread: the gather (redone if ``regather``), dW into ``acc``
    ``[eq:masked-conv-backward-w]``, then (``dx3`` not None) dX over the gather buffer ``[eq:masked-conv-backward-x]``."""
    K, C_out = WT.shape
    nb, HW = cols.shape[1], cols.shape[2]
    N = dy.shape[1] if cn else dy.shape[0]
    if regather:
        _k.im2col(x3, cn, s, m, Wd, taps, cols)
    c2 = cols.reshape(K + 1, nb * HW)[:, :m * HW]
    if cn:
        dY = dy.reshape(C_out, N * HW)[:, s * HW:(s + m) * HW]
        _k.accumulate_dw(acc, dY, c2, first, tmp, tiles=True)
        if dx3 is not None:
            np.matmul(WT, dY, out=c2[:K])
    else:
        dY3 = dy[s:s + m].reshape(m, C_out, HW)
        _k.accumulate_dw_stacked(acc, dY3, cols[:, :m].transpose(1, 0, 2), first, parts[:m], tmp, tiles=True)
        if dx3 is not None:
            np.matmul(WT, dY3, out=cols[:K, :m].transpose(1, 0, 2))
    if dx3 is not None:
        _k.col2im(cols, taps, dx3, cn, s, m, Wd)


def masked_conv2d_backward(dy, cache, *, need_dx: bool = True):
    """Gradients of :func:`masked_conv2d_forward` ``[eq:masked-conv-backward-x]`` ``[eq:masked-conv-backward-w]``.

    Parameters
    ----------
    dy : ndarray of the shape of ``y``, (N, C_out, H, W) or (C_out, N, H, W) for "CNHW"
        Upstream gradient, the dtype of the forward pass.
    cache : list
        From :func:`masked_conv2d_forward`; consumed (the gather buffer is reused for dX).
    need_dx : bool
        False skips :math:`dX` (first layer) and returns ``dx=None``.

    Returns
    -------
    dx : ndarray of the shape of ``x``, or None
        :math:`dx_{n,c,i,j} = \\sum_{o,t} W_{o,c,t}\\, dy_{n,o,i-di_t,j-dj_t}`.
    dW : ndarray of shape (C_out, C_in, T)
        :math:`\\sum_{n,i,j} dy_{n,o,i,j}\\, x_{n,c,i+di_t,j+dj_t}` (packed: masked taps
        have no gradient because they are not parameters).
    db : ndarray of shape (C_out,)
    """
    if not isinstance(cache, list) or len(cache) != 9 or cache[0] != "masked_conv2d":
        raise TypeError("cache must be the cache returned by masked_conv2d_forward")
    _, x, W, mask_type, layout, taps, cols, ws, generation = cache
    if generation is None:
        raise ValueError("this cache was already used by a backward pass (its gather buffer now holds "
                         "dX scratch); run the forward again")
    if ws is not None and ws.generation != generation:
        raise ValueError("the workspace ran another forward pass since this cache was made; backward "
                         "needs the cache of the latest forward of its workspace")
    cn = layout == "CNHW"
    C_out, C_in, T = W.shape
    N, H, Wd = (x.shape[1] if cn else x.shape[0]), x.shape[2], x.shape[3]
    HW, K = H * Wd, C_in * T
    dy = _float(dy, "dy")
    y_shape = (C_out, N, H, Wd) if cn else (N, C_out, H, Wd)
    if dy.shape != y_shape:
        raise ValueError(f"dy must have the shape of the forward output {y_shape}, got {dy.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but the forward pass ran in {x.dtype}")
    dy = np.ascontiguousarray(dy)
    cache[8] = None  # consumed
    dx = _buffer(ws, "dx", x.shape, x.dtype) if need_dx else None
    if taps is None:  # pointwise
        W2 = W.reshape(C_out, C_in)
        if cn:
            dy2, x2 = dy.reshape(C_out, N * HW), x.reshape(C_in, N * HW)
            dW = np.matmul(dy2, x2.T).reshape(C_out, C_in, 1)  # [eq:masked-conv-backward-w]
            db = np.matmul(dy2, np.ones(N * HW, x.dtype))
            if need_dx:
                _matmul_or_outer(W2.T, dy2, dx.reshape(C_in, N * HW))  # [eq:masked-conv-backward-x]
        else:
            dy3, x3 = dy.reshape(N, C_out, HW), x.reshape(N, C_in, HW)
            part = _buffer(ws, "part", (N, C_out, C_in), x.dtype)
            np.matmul(dy3, x3.transpose(0, 2, 1), out=part)  # [eq:masked-conv-backward-w]
            dW = part.sum(axis=0).reshape(C_out, C_in, 1)
            db = np.matmul(dy3, np.ones(HW, x.dtype)).sum(axis=0)
            if need_dx:
                _matmul_or_outer(W2.T, dy3, dx.reshape(N, C_in, HW))  # [eq:masked-conv-backward-x]
        return dx, dW, db
    if isinstance(cols, str):
        return _backward_winograd(dy, x, W, cn, N, H, Wd, ws, dx)
    return _backward_ranges(dy, x, W, taps, cols, cn, N, Wd, HW, K, ws, dx)


# ----------------------------------------------------------------------------- Winograd (3x3 mask B)
def _winograd_applies(k, mask_type, C_in, Wd):
    """Whether a layer runs Winograd's F(2,3) + F(2,2) (``_winograd``) instead of the gather."""
    return k == 3 and mask_type == "B" and C_in >= _WINOGRAD_MIN_CHANNELS and Wd % 2 == 0


def _winograd_setup(x, W, N, H, Wd):
    """Transformed weights, the (.., HW) view of x, the image ranges, images per chunk (``nb``: their
    transformed inputs and products stay in L2 with the GEMMs) and pairs per image."""
    C_out, C_in = W.shape[:2]
    P = H * (Wd // 2)
    U3, Uc = _wino.weight_transform(W)
    x3 = x.reshape(x.shape[0], x.shape[1], H * Wd)
    ranges = _threads.split_ranges(N, min(N, _threads.blas_threads()))
    longest = max(hi - lo for lo, hi in ranges)
    nb = int(max(1, min(longest, _CHUNK_BYTES // ((7 * C_in + 4 * C_out) * P * x.itemsize))))
    return U3, Uc, x3, ranges, nb, P


def _winograd_buffers(ws, w, C_in, C_out, cols, dt):
    """Worker ``w``'s transformed inputs (7, C_in, cols) and products (4, C_out, cols)."""
    return (_buffer(ws, f"wino_V{w}", (7, C_in, cols), dt), _buffer(ws, f"wino_M{w}", (4, C_out, cols), dt))


def _forward_winograd(x, W, b, cn, N, H, Wd, y, ws):
    """The forward pass by Winograd's minimal filtering ``[eq:winograd-f23]`` ``[eq:masked-conv]``."""
    C_out, C_in = W.shape[:2]
    U3, Uc, x3, ranges, nb, P = _winograd_setup(x, W, N, H, Wd)
    y3 = y.reshape(y.shape[0], y.shape[1], H * Wd)
    bias = np.ascontiguousarray(b)

    def job(lo, hi, w):
        V, M = _winograd_buffers(ws, w, C_in, C_out, nb * P, x.dtype)
        for s in range(lo, hi, nb):
            _wino.forward_chunk(x3, cn, s, min(hi, s + nb) - s, Wd, U3, Uc, bias, y3, V, M)

    _threads.run_ranges(job, ranges)


def _backward_winograd(dy, x, W, cn, N, H, Wd, ws, dx):
    """dX, dW, db through the transposed Winograd steps ``[eq:winograd-f23]`` ``[eq:masked-conv-backward-x]``
    ``[eq:masked-conv-backward-w]``; the ranges' sums added in range order."""
    C_out, C_in = W.shape[:2]
    U3, Uc, x3, ranges, nb, P = _winograd_setup(x, W, N, H, Wd)
    dy3 = dy.reshape(dy.shape[0], dy.shape[1], H * Wd)
    dx3 = dx.reshape(x3.shape) if dx is not None else None
    sums = [_wino.weight_sums(C_in, C_out, x.dtype) for _ in ranges]

    def job(lo, hi, w):
        V, dM = _winograd_buffers(ws, w, C_in, C_out, nb * P, x.dtype)
        for s in range(lo, hi, nb):
            _wino.backward_chunk(x3, s, dy3, dx3, s, cn, min(hi, s + nb) - s, Wd, U3, Uc, V, dM, sums[w], s == lo)

    _threads.run_ranges(job, ranges)
    for more in sums[1:]:
        for a, b in zip(sums[0], more):
            a += b
    dW, db = _wino.weight_gradient(sums[0])
    return dx, dW, db


def _backward_ranges(dy, x, W, taps, gathered, cn, N, Wd, HW, K, ws, dx):
    """The backward pass chunk by chunk, over one image range or (several BLAS threads) one per thread of
    our own with one BLAS thread each, the weight gradients summed over the ranges in order.  ``gathered``
    is ``(ranges, gathers)`` of the forward when each of its ranges was one chunk (kept), else None."""
    C_out = W.shape[0]
    dt = x.dtype
    if gathered is not None:
        ranges, gathers = gathered
    else:
        ranges = _threads.split_ranges(N, min(N, _threads.blas_threads()))
        nb = _chunk(max(hi - lo for lo, hi in ranges), (K + 1) * HW * x.itemsize)
    transposed = _k.dw_transposed(C_out, K + 1)
    shape = (K + 1, C_out) if transposed else (C_out, K + 1)
    accs = [np.empty(shape, dt) for _ in ranges]
    WT = W.reshape(C_out, K).T
    x3 = x.reshape(x.shape[0], x.shape[1], HW)
    dx3 = dx.reshape(x3.shape) if dx is not None else None

    def job(lo, hi, w):
        if gathered is not None:
            cols, step = gathers[w], hi - lo
        else:
            cols, step = _gather_buffer(ws, K, nb, HW, dt, "cols" if w == 0 else f"cols{w}"), nb
        parts = None if cn else _buffer(ws, f"dw_parts{w}", (cols.shape[1],) + shape, dt)
        tmp = np.empty(shape, dt)
        for s in range(lo, hi, step):
            _backward_chunk(x3, dy, cn, s, min(hi, s + step) - s, Wd, taps, cols, WT, accs[w], tmp, parts, s == lo, dx3,
                            gathered is None)

    _threads.run_ranges(job, ranges)
    for more in accs[1:]:
        accs[0] += more
    dWb = accs[0].T if transposed else accs[0]
    dW = np.ascontiguousarray(dWb[:, :K]).reshape(W.shape)
    return dx, dW, np.ascontiguousarray(dWb[:, K])


def _matmul_or_outer(A, B, out):
    """``out = A @ B`` (stacked over a leading axis of B), with the K = 1 case as a broadcast product."""
    if A.shape[1] == 1:  # an outer product: BLAS is slow at K = 1
        np.multiply(A, B, out=out)
    else:
        np.matmul(A, B, out=out)


# ----------------------------------------------------------------------------- NumPy references
def masked_conv2d_forward_reference(x, W, b, mask_type) -> np.ndarray:
    """Dense convolution with the masked weight, one einsum per tap of the full k x k kernel.

    The plain definition ``[eq:masked-conv]`` with :math:`W \\odot M` ``[eq:mask-a]``
    ``[eq:mask-b]``; same arguments and result as :func:`masked_conv2d_forward`.
    """
    x, W, b, mask_type, k, _ = _check_forward_args(x, W, b, mask_type)
    Wf = unpack_masked_weight(W, mask_type)
    H, Wd, r = x.shape[2], x.shape[3], k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    y = np.broadcast_to(b[None, :, None, None], (x.shape[0], W.shape[0], H, Wd)).copy()
    for a in range(k):
        for c in range(k):
            y += np.einsum("oi,nihw->nohw", Wf[:, :, a, c], xp[:, :, a:a + H, c:c + Wd])
    return y


def masked_conv2d_backward_reference(dy, x, W, mask_type):
    """``(dx, dW, db)`` by the dense definitions ``[eq:masked-conv-backward-x]`` ``[eq:masked-conv-backward-w]``."""
    x, W, _, mask_type, k, _ = _check_forward_args(x, W, np.zeros(np.shape(W)[0], np.asarray(W).dtype), mask_type)
    dy = _float(dy, "dy")
    H, Wd, r = x.shape[2], x.shape[3], k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)))
    Wf = unpack_masked_weight(W, mask_type)
    dWf = np.zeros_like(Wf)
    dxp = np.zeros_like(xp)
    for a in range(k):
        for c in range(k):
            dWf[:, :, a, c] = np.einsum("nohw,nihw->oi", dy, xp[:, :, a:a + H, c:c + Wd])
            dxp[:, :, a:a + H, c:c + Wd] += np.einsum("oi,nohw->nihw", Wf[:, :, a, c], dy)
    dW = pack_masked_weight(dWf, mask_type)
    return dxp[:, :, r:r + H, r:r + Wd], dW, dy.sum(axis=(0, 2, 3))
