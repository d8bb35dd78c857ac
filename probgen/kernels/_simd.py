"""Register-blocked SIMD tiles written in LLVM IR, for the GEMM shapes OpenBLAS runs slowly.

The user so far is the gathered masked convolution whose products have a dimension of 25: the 7x7
mask-A input layer (C_out = 64, 24 taps and the bias).  Per image its forward product is
:math:`Y = [W\\,|\\,b]\\,[\\mathrm{cols}; 1]` ``[eq:masked-conv]`` (64 x 25 times 25 x HW) and its weight
gradient :math:`dW = dY\\,\\mathrm{cols}^\\top` ``[eq:masked-conv-backward-w]`` (both factors long rows, a
64 x 25 result).  A dimension of 25 fits none of OpenBLAS's micro-kernels: ~1.0 ms for the weight gradient
of a batch of 32 28x28 images at one thread in every orientation and split we tried
(``_masked_conv_kernels._split``), about half its large-GEMM rate.

* **Weight gradient** (:func:`dw_lanes`): a tile of 4 rows of ``dY`` against 5 rows of the gather keeps its
  20 sums as *lanes*, 512-bit registers of partial sums over the pixels ``p`` with the same ``p mod V``
  (V = 16 float32 / 8 float64); each step loads 9 vectors and issues 20 fused multiply-adds.  The lanes
  live in a (C_out, K + 1, V) buffer across images and are summed once at the end.
* **Forward product** (:func:`product`): a tile of 8 rows of ``[W | b]`` by 3 vectors of pixels starts from
  the bias and adds one gather row per step (3 loads, 8 broadcast weights, 24 fused multiply-adds).

``llvm.fma`` rounds once (exact IEEE); nothing is reassociated, so no fast-math flag is involved
(CONVENTIONS: off).  The tiles are emitted as IR because Numba cannot be made to keep twenty-odd vector
accumulators in registers from Python source without fast-math, and a loop over a tile in Python source is
what LLVM would have to rediscover.  The compiled drivers take (m, rows, L) views whose last axis is
contiguous (NCHW stacks, CNHW chunks as strided views), handle rows that do not fill a tile and
pixels that do not fill a vector, and have NumPy twins (``*_reference``) for the tests.

Used only where measured faster: by the layer functions of :mod:`.masked_conv` (``tiles=True``) on hosts with
AVX-512 (as LLVM reports the CPU) in the window of shapes of :func:`applies`; elsewhere, and in the PixelCNN
network (its input layer measured no faster with them: 95.0 against 93.8 ms per ``loss_and_grads`` of the
benchmark model, within noise), the BLAS paths of ``_masked_conv_kernels``.
"""
from __future__ import annotations

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = []  # private module

_VECTOR_BITS = 512
_RO, _RT = 4, 5  # tile: rows of dY by rows of the gather


def _host_has_avx512() -> bool:
    try:
        return bool(llvm.get_host_cpu_features().get("avx512f", False))
    except Exception:  # pragma: no cover - a platform where LLVM cannot report features
        return False


HAS_AVX512 = _host_has_avx512()


# ----------------------------------------------------------------------------- the tile, in LLVM IR
def _vector_kit(context, builder, dtype):
    """The 512-bit vector type of ``dtype``, its pointer type, its lanes and its ``llvm.fma``."""
    elt = context.get_value_type(dtype)
    lanes = _VECTOR_BITS // dtype.bitwidth
    vty = ir.VectorType(elt, lanes)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty] * 3),
                                         f"llvm.fma.v{lanes}f{dtype.bitwidth}")
    return vty, vty.as_pointer(), lanes, fma


def _element_ptr(context, builder, aryty, ary, offset):
    return builder.gep(context.make_array(aryty)(context, builder, ary).data, [offset])


def _prefetch_rows(context, builder, aryty, ary, pf, stride, rows, off):
    """``llvm.prefetch`` (read, L2) of ``ary[pf + i*stride + off]`` for ``i < rows``, when ``pf >= 0``."""
    i64, i32, i8p = ir.IntType(64), ir.IntType(32), ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                        "llvm.prefetch.p0i8")
    with builder.if_then(builder.icmp_signed(">=", pf, ir.Constant(i64, 0)), likely=True):
        base = _element_ptr(context, builder, aryty, ary, pf)
        for i in range(rows):
            q = builder.gep(base, [builder.add(builder.mul(ir.Constant(i64, i), stride), off)])
            builder.call(fn, [builder.bitcast(q, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])


def _counted_loop(builder, count, start, step):
    """Emit ``for i in range(count): values = step(i, values)`` with the values (vectors) in registers (phi nodes),
    from ``start``; returns the values after the loop."""
    i64 = ir.IntType(64)
    entry = builder.block
    header, body, done = (builder.append_basic_block(f"loop.{part}") for part in ("header", "body", "done"))
    builder.branch(header)
    builder.position_at_end(header)
    i = builder.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    values = [builder.phi(v.type) for v in start]
    for phi, v in zip(values, start):
        phi.add_incoming(v, entry)
    builder.cbranch(builder.icmp_signed("<", i, count), body, done)
    builder.position_at_end(body)
    new = step(i, values)
    i.add_incoming(builder.add(i, ir.Constant(i64, 1)), builder.block)
    for phi, v in zip(values, new):
        phi.add_incoming(v, builder.block)
    builder.branch(header)
    builder.position_at_end(done)
    return values


def _make_dot_tile(ro, rt):
    """An intrinsic ``tile(lanes, l0, l_rs, a, a0, a_rs, b, b0, b_rs, nvec, pf)`` for arrays of one float dtype,
    addressed from each array's first element (element offsets ``*0``, row strides ``*_rs`` in elements):

    ``lanes[l0 + i*l_rs + j*V + q] += sum_v a[a0 + i*a_rs + v*V + q] * b[b0 + j*b_rs + v*V + q]``

    for ``i < ro``, ``j < rt``, ``q < V`` (the lanes), ``v < nvec``; each sum by fused multiply-adds in ``v`` order.
    With ``pf >= 0`` every step also prefetches (into L2) the same vectors of the ``ro`` rows of ``a`` starting at
    ``a[pf]`` (the rows the next tile will read: from memory they would stall the loop; measured 6 % faster).
    """

    @intrinsic
    def tile(typingctx, lanes, l0, l_rs, a, a0, a_rs, b, b0, b_rs, nvec, pf):
        sig = types.void(lanes, l0, l_rs, a, a0, a_rs, b, b0, b_rs, nvec, pf)

        def codegen(context, builder, signature, args):
            lanes_, l0_, l_rs_, a_, a0_, a_rs_, b_, b0_, b_rs_, nvec_, pf_ = args
            st = signature.args
            vty, vptr, V, fma = _vector_kit(context, builder, st[0].dtype)
            i64 = ir.IntType(64)

            def const(k):
                return ir.Constant(i64, k)

            def row(ptr, stride, i):
                return builder.gep(ptr, [builder.mul(const(i), stride)])

            lp = _element_ptr(context, builder, st[0], lanes_, l0_)
            ap = _element_ptr(context, builder, st[3], a_, a0_)
            bp = _element_ptr(context, builder, st[6], b_, b0_)
            slots = [[builder.bitcast(builder.gep(row(lp, l_rs_, i), [const(j * V)]), vptr) for j in range(rt)]
                     for i in range(ro)]
            arows = [row(ap, a_rs_, i) for i in range(ro)]
            brows = [row(bp, b_rs_, j) for j in range(rt)]
            slots = [slot for row_slots in slots for slot in row_slots]  # (i, j) at i * rt + j

            def step(v, acc):
                off = builder.mul(v, const(V))
                av = [builder.load(builder.bitcast(builder.gep(arows[i], [off]), vptr), align=1) for i in range(ro)]
                bv = [builder.load(builder.bitcast(builder.gep(brows[j], [off]), vptr), align=1) for j in range(rt)]
                _prefetch_rows(context, builder, st[3], a_, pf_, a_rs_, ro, off)
                return [builder.call(fma, [av[i], bv[j], acc[i * rt + j]]) for i in range(ro) for j in range(rt)]

            start = [builder.load(slot, align=1) for slot in slots]
            for slot, total in zip(slots, _counted_loop(builder, nvec_, start, step)):
                builder.store(total, slot, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_full = _make_dot_tile(_RO, _RT)
_tile_row = _make_dot_tile(1, _RT)  # a leftover row of dY
_tile_col = _make_dot_tile(_RO, 1)  # a leftover row of the gather
_tile_one = _make_dot_tile(1, 1)


def _broadcast(builder, vty, V, value):
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(i32, V), [0] * V))


def _make_product_tile(ro, rv):
    """An intrinsic ``tile(y, y0, y_rs, w, w0, w_rs, x, x0, x_rs, K)`` (offsets and row strides in elements, as above):

    ``y[y0 + i*y_rs + v*V + q] = w[w0 + i*w_rs + K] + sum_{t < K} w[w0 + i*w_rs + t] * x[x0 + t*x_rs + v*V + q]``

    for ``i < ro``, ``v < rv``, ``q < V``: ``ro`` rows of ``[W | b]`` times ``rv`` vectors of the gather, the bias
    (column ``K`` of each row) as the starting value, fused multiply-adds in ``t`` order.
    """

    @intrinsic
    def tile(typingctx, y, y0, y_rs, w, w0, w_rs, x, x0, x_rs, K):
        sig = types.void(y, y0, y_rs, w, w0, w_rs, x, x0, x_rs, K)

        def codegen(context, builder, signature, args):
            y_, y0_, y_rs_, w_, w0_, w_rs_, x_, x0_, x_rs_, K_ = args
            st = signature.args
            vty, vptr, V, fma = _vector_kit(context, builder, st[0].dtype)
            i64 = ir.IntType(64)

            def const(k):
                return ir.Constant(i64, k)

            yp = _element_ptr(context, builder, st[0], y_, y0_)
            wp = _element_ptr(context, builder, st[3], w_, w0_)
            xp = _element_ptr(context, builder, st[6], x_, x0_)
            wrows = [builder.gep(wp, [builder.mul(const(i), w_rs_)]) for i in range(ro)]
            bias = [_broadcast(builder, vty, V, builder.load(builder.gep(wrows[i], [K_]))) for i in range(ro)]

            def step(t, acc):
                xrow = builder.gep(xp, [builder.mul(t, x_rs_)])
                xv = [builder.load(builder.bitcast(builder.gep(xrow, [const(v * V)]), vptr), align=1) for v in range(rv)]
                wv = [_broadcast(builder, vty, V, builder.load(builder.gep(wrows[i], [t]))) for i in range(ro)]
                return [builder.call(fma, [wv[i], xv[v], acc[i * rv + v]]) for i in range(ro) for v in range(rv)]

            totals = _counted_loop(builder, K_, [bias[i] for i in range(ro) for _ in range(rv)], step)
            for i in range(ro):
                yrow = builder.gep(yp, [builder.mul(const(i), y_rs_)])
                for v in range(rv):
                    builder.store(totals[i * rv + v], builder.bitcast(builder.gep(yrow, [const(v * V)]), vptr), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_PO, _PV = 8, 3  # product tile: rows of [W | b] by vectors of pixels
_product_full = _make_product_tile(_PO, _PV)
_product_vec = _make_product_tile(_PO, 1)  # a leftover vector of pixels
_product_row = _make_product_tile(1, _PV)  # a leftover row of W
_product_one = _make_product_tile(1, 1)


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def product(Y, Wb, X):  # pragma: no cover - compiled
    """``Y[n] = Wb[:, :K] X[n, :K] + Wb[:, K]`` ``[eq:masked-conv]``: ``Wb`` (C_out, K + 1) with the bias last, ``Y``
    (m, C_out, L) and ``X`` (m, >= K, L) views whose last axis is contiguous.  Per image, tiles of 8 rows of W by
    3 vectors of pixels, pixels outermost (the gather's block stays in L1); the pixels past the last whole
    vector in plain loops.
    """
    m, C, L = Y.shape
    K1 = Wb.shape[1]
    K = K1 - 1
    V = _VECTOR_BITS // (8 * Y.itemsize)
    y_img, y_rs = Y.strides[0] // Y.itemsize, Y.strides[1] // Y.itemsize
    x_img, x_rs = X.strides[0] // X.itemsize, X.strides[1] // X.itemsize
    nvec = L // V
    nfull, Co = nvec - nvec % _PV, C - C % _PO
    for n in range(m):
        yn, xn = n * y_img, n * x_img
        for v0 in range(0, nvec, _PV):
            for o0 in range(0, Co, _PO):
                if v0 < nfull:
                    _product_full(Y, yn + o0 * y_rs + v0 * V, y_rs, Wb, o0 * K1, K1, X, xn + v0 * V, x_rs, K)
                else:
                    for v in range(v0, nvec):
                        _product_vec(Y, yn + o0 * y_rs + v * V, y_rs, Wb, o0 * K1, K1, X, xn + v * V, x_rs, K)
            for o in range(Co, C):
                if v0 < nfull:
                    _product_row(Y, yn + o * y_rs + v0 * V, y_rs, Wb, o * K1, K1, X, xn + v0 * V, x_rs, K)
                else:
                    for v in range(v0, nvec):
                        _product_one(Y, yn + o * y_rs + v * V, y_rs, Wb, o * K1, K1, X, xn + v * V, x_rs, K)
        for o in range(C):  # the pixels past the last whole vector
            for p in range(nvec * V, L):
                acc = Wb[o, K]
                for t in range(K):
                    acc += Wb[o, t] * X[n, t, p]
                Y[n, o, p] = acc


# ----------------------------------------------------------------------------- the weight gradient
@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def dw_lanes(A, B, lanes):  # pragma: no cover - compiled
    """``lanes[o, t, q] += sum_n sum_{p = q mod V} A[n, o, p] B[n, t, p]`` ``[eq:masked-conv-backward-w]``.

    ``A`` (m, C_out, L) (dY) and ``B`` (m, K1, L) (the gather) are views whose last axis is contiguous;
    ``lanes`` is (C_out, K1, V), V the lanes of a 512-bit vector; pixels past the last whole vector
    (``L mod V``) go to lane 0.  Per image, tiles of 4 rows of A by 5 rows of B, A's rows outermost (read once
    into L1, used five times).
    """
    m, C, L = A.shape
    K1, V = lanes.shape[1], lanes.shape[2]
    a_img, a_rs = A.strides[0] // A.itemsize, A.strides[1] // A.itemsize
    b_img, b_rs = B.strides[0] // B.itemsize, B.strides[1] // B.itemsize
    nvec = L // V
    Co, Kt = C - C % _RO, K1 - K1 % _RT
    lrs = K1 * V
    for n in range(m):
        an, bn = n * a_img, n * b_img
        for o0 in range(0, Co, _RO):
            # the first tile of each row block prefetches the next block's rows (the next image's first)
            if o0 + _RO < Co:
                pf = an + (o0 + _RO) * a_rs
            else:
                pf = (n + 1) * a_img if n + 1 < m else -1
            for t0 in range(0, Kt, _RT):
                _tile_full(lanes, (o0 * K1 + t0) * V, lrs, A, an + o0 * a_rs, a_rs, B, bn + t0 * b_rs, b_rs, nvec,
                           pf if t0 == 0 else -1)
            for t in range(Kt, K1):
                _tile_col(lanes, (o0 * K1 + t) * V, lrs, A, an + o0 * a_rs, a_rs, B, bn + t * b_rs, b_rs, nvec, -1)
        for o in range(Co, C):
            for t0 in range(0, Kt, _RT):
                _tile_row(lanes, (o * K1 + t0) * V, lrs, A, an + o * a_rs, a_rs, B, bn + t0 * b_rs, b_rs, nvec, -1)
            for t in range(Kt, K1):
                _tile_one(lanes, (o * K1 + t) * V, lrs, A, an + o * a_rs, a_rs, B, bn + t * b_rs, b_rs, nvec, -1)
        for o in range(C):  # the pixels past the last whole vector
            for t in range(K1):
                s = lanes.dtype.type(0)
                for p in range(nvec * V, L):
                    s += A[n, o, p] * B[n, t, p]
                lanes[o, t, 0] += s


def lanes_shape(C_out, K1, dtype):
    """The shape of :func:`dw_lanes`'s buffer."""
    return (C_out, K1, _VECTOR_BITS // (8 * np.dtype(dtype).itemsize))


def applies(C_out, K1, L, dtype) -> bool:
    """Whether a gathered layer's products (C_out x K1 weights, L pixels per image) run here instead of BLAS.

    Measured at one thread (Sapphire Rapids, AVX-512; OpenBLAS 0.3.31 SkylakeX kernels), float32, a batch of 32
    28x28 images, each side alternating with the BLAS path in one process (ms for the batch, medians of 200-300):
    with C_out = 64 and K1 = 25 (the 7x7 mask-A input layer) the weight gradient 0.87 against 0.92 with its
    inputs in cache and 1.11 against 1.21 after evicting them (the tile before the prefetch: 0.74-0.78 against
    0.90-0.98 in cache), the forward product (its prototype) 0.65-0.71 against 0.72-0.80 (OpenBLAS with its two
    halves, ``_masked_conv_kernels._halves``).  Only that window (and AVX-512); other shapes keep BLAS until
    measured.
    """
    return HAS_AVX512 and C_out == 64 and K1 == 25 and L >= 256 and np.dtype(dtype) in _FLOATS


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _stack(a):
    """A 2-D (rows, L) view as a stack of one, 3-D as is: the last axis must be contiguous."""
    a = a[None] if a.ndim == 2 else a
    if a.strides[2] != a.itemsize:
        raise ValueError(f"the pixel axis must be contiguous, got strides {a.strides}")
    return a


_SEGMENT = 1024  # columns per segment of a long row in the weight gradient


def _segments(a, k):
    """The first ``k`` segments of ``_SEGMENT`` columns of a (rows, L) view as a (k, rows, _SEGMENT) stack."""
    s0, s1 = a.strides
    return np.lib.stride_tricks.as_strided(a, (k, a.shape[0], _SEGMENT), (_SEGMENT * s1, s0, s1), writeable=False)


def forward_product(Wb, X, out):
    """``out = Wb[:, :K] X + Wb[:, K]`` by :func:`product`: ``X`` (K + 1, L) or a stack (m, K + 1, L) (its last
    row, the ones of the bias, is not read), ``out`` (C_out, L) or (m, C_out, L); views with contiguous rows."""
    product(_stack(out), Wb, _stack(X))


def accumulate_dw(acc, dY, X, first):
    """``acc (+)= sum_n dY_n X_n^T`` (C_out, K1) by :func:`dw_lanes`: ``dY`` (C_out, L) or a stack (m, C_out, L),
    ``X`` (K1, L) or (m, K1, L), views with contiguous rows."""
    lanes = np.zeros(lanes_shape(acc.shape[0], acc.shape[1], dY.dtype), dY.dtype)
    if dY.ndim == 2 and dY.shape[1] > 2 * _SEGMENT:  # long rows (several images): segments, so each tile's rows stay in L1
        k = dY.shape[1] // _SEGMENT
        dw_lanes(_segments(dY, k), _segments(X, k), lanes)
        dY, X = dY[:, k * _SEGMENT:], X[:, k * _SEGMENT:]
    dw_lanes(_stack(dY), _stack(X), lanes)
    if first:
        np.sum(lanes, axis=2, out=acc)
    else:
        acc += lanes.sum(axis=2)


def product_reference(Wb, X):
    """:func:`product` in NumPy for a stack ``X`` (m, K, L): ``Wb[:, :K] X_n + Wb[:, K]``, in float64."""
    K = X.shape[1]
    return np.einsum("ok,nkl->nol", Wb[:, :K].astype(np.float64), X.astype(np.float64)) + Wb[:, K, None]


def dw_lanes_reference(A, B, V):
    """:func:`dw_lanes` in NumPy for stacks ``A`` (m, C_out, L) and ``B`` (m, K1, L): the lane sums, in float64."""
    m, C, L = A.shape
    K1 = B.shape[1]
    nvec = L // V
    prod = np.einsum("nol,ntl->otl", A.astype(np.float64), B.astype(np.float64))
    lanes = prod[:, :, :nvec * V].reshape(C, K1, nvec, V).sum(axis=2)
    lanes[:, :, 0] += prod[:, :, nvec * V:].sum(axis=2)
    return lanes
