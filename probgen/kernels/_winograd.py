"""Winograd's minimal filtering for the 3x3 mask-B convolution: 7 products per pair of outputs instead of 10.

Private half of :mod:`probgen.kernels.masked_conv` (``docs/pixelcnn.md``, *Winograd for the 3x3 mask-B
layer*).  A 3x3 mask-B kernel has the taps :math:`g_0, g_1, g_2` on the row above (columns -1, 0, +1) and
:math:`h_0, h_1` on the current row (columns -1, 0).  For the outputs at columns :math:`j, j+1` (``j`` even)
of row ``i``, with :math:`d_0..d_3` = row ``i - 1`` at columns ``j-1 .. j+2`` and :math:`e_0..e_2` = row ``i``
at columns ``j-1 .. j+1`` (zero outside the image), the row above is Winograd's :math:`F(2, 3)` and the
current row :math:`F(2, 2)` ``[eq:winograd-f23]``:

.. math::

   y_j = m_1 + m_2 + m_3 + m_5 + m_6, \\qquad y_{j+1} = m_2 - m_3 - m_4 + m_6 + m_7,

   m_1 = g_0 (d_0 - d_2),\\ m_2 = \\tfrac{g_0 + g_1 + g_2}{2}(d_1 + d_2),\\
   m_3 = \\tfrac{g_0 - g_1 + g_2}{2}(d_2 - d_1),\\ m_4 = g_2 (d_1 - d_3),

   m_5 = h_0 (e_0 - e_1),\\ m_6 = (h_0 + h_1)\\, e_1,\\ m_7 = h_1 (e_2 - e_1).

With channels every product is a matrix product (C_out x C_in times C_in x pairs), and products that
enter both outputs with the same signs share one GEMM: group A :math:`[g_0 | h_0]` on
:math:`[d_0 - d_2; e_0 - e_1]` (:math:`y_j` only), B :math:`[\\frac{g_0+g_1+g_2}{2} | h_0 + h_1]` on
:math:`[d_1 + d_2; e_1]` (both), D :math:`[-g_2 | h_1]` on :math:`[d_1 - d_3; e_2 - e_1]` (:math:`y_{j+1}` only),
each with inner dimension :math:`2 C_{in}`, and C :math:`\\frac{g_0 - g_1 + g_2}{2}` on :math:`d_2 - d_1`
(:math:`+` in :math:`y_j`, :math:`-` in :math:`y_{j+1}`), so :math:`y_j = A + B + C`, :math:`y_{j+1} = B - C + D`.

The transformed inputs ``V`` have shape (7, C_in, columns), one column per pair (image, row, ``j/2``), in the
order :math:`d_0 - d_2,\\ e_0 - e_1,\\ d_1 + d_2,\\ e_1,\\ d_1 - d_3,\\ e_2 - e_1,\\ d_2 - d_1`, so that
``V[:6].reshape(3, 2 C_in, columns)`` holds groups A, B, D and ``V[6]`` group C; the products ``M`` have
shape (4, C_out, columns) in the order A, B, D, C.  The backward pass is the transpose of each step
``[eq:masked-conv-backward-x]`` ``[eq:masked-conv-backward-w]``: :math:`dA = dy_j`, :math:`dB = dy_j + dy_{j+1}`,
:math:`dD = dy_{j+1}`, :math:`dC = dy_j - dy_{j+1}`; :math:`dU = dM\\, V^\\top`, :math:`dV = U^\\top dM`, and
:func:`input_transform_backward` adds each transformed input's gradient back to the pixels it was made of.
Images must have an even width (the pairs); every compiled pass has a NumPy ``*_reference`` twin.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = []  # private module


# ----------------------------------------------------------------------------- weights
def weight_transform(W):
    """Packed (C_out, C_in, 5) mask-B 3x3 weight -> ``(U3, Uc)``: (3, C_out, 2 C_in) for groups A, B, D and
    (C_out, C_in) for group C ``[eq:winograd-f23]``."""
    g0, g1, g2, h0, h1 = (W[:, :, t] for t in range(5))
    U3 = np.stack([np.concatenate([g0, h0], axis=1),
                   np.concatenate([(g0 + g1 + g2) * 0.5, h0 + h1], axis=1),
                   np.concatenate([-g2, h1], axis=1)])
    return np.ascontiguousarray(U3), np.ascontiguousarray((g0 - g1 + g2) * 0.5)


def weight_transform_backward(dU3, dUc):
    """The gradient of the packed weight (C_out, C_in, 5) from those of ``U3`` and ``Uc``."""
    C = dUc.shape[1]
    dA, dB, dD = dU3[0], dU3[1], dU3[2]
    dW = np.empty(dUc.shape + (5,), dUc.dtype)
    dW[:, :, 0] = dA[:, :C] + 0.5 * (dB[:, :C] + dUc)
    dW[:, :, 1] = 0.5 * (dB[:, :C] - dUc)
    dW[:, :, 2] = 0.5 * (dB[:, :C] + dUc) - dD[:, :C]
    dW[:, :, 3] = dA[:, C:] + dB[:, C:]
    dW[:, :, 4] = dB[:, C:] + dD[:, C:]
    return dW


# ----------------------------------------------------------------------------- compiled transforms
@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _pairs_geometry(HW, Wd):  # pragma: no cover - compiled
    """Rows ``H``, pairs per row ``U = W/2`` and pairs per image ``P = H U``."""
    U = Wd // 2
    return HW // Wd, U, (HW // Wd) * U


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _four_rows(M, o, n, P):  # pragma: no cover - compiled
    """Image ``n``'s columns of channel ``o`` in each of the four products (A, B, D, C)."""
    lo = n * P
    return M[0, o, lo:lo + P], M[1, o, lo:lo + P], M[2, o, lo:lo + P], M[3, o, lo:lo + P]


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def input_transform(x3, cn, s, m, Wd, V):  # pragma: no cover - compiled
    """V[:, c, (n - s) P + q] for images ``s .. s+m-1``, pair ``q = i U + u`` (``U = W/2``, ``P = H U``).

    ``x3`` is (N, C, HW), or (C, N, HW) with ``cn``; columns ``m P`` and beyond are not touched.  With
    an even width, pair ``q`` starts at flat pixel ``2q`` of its image and the row above at ``2q - W``,
    so each transformed input of rows 1 .. H-1 is one branch-free loop over the plane.  The loops index
    views at ``2t + const`` (provably non-negative: an index that might be negative makes Numba wrap it,
    which stops vectorisation, 10x slower); the pairs whose neighbour crosses a row edge (``u = 0``: no
    :math:`d_0, e_0`; ``u = U - 1``: no :math:`d_3`) are set afterwards.
    """
    C = x3.shape[0] if cn else x3.shape[1]
    HW = x3.shape[2]
    H, U, P = _pairs_geometry(HW, Wd)
    R = P - U  # pairs below row 0
    for n in range(m):
        for c in range(C):
            x = x3[c, s + n] if cn else x3[s + n, c]
            col = n * P  # seven slices here, not from a helper returning a tuple: that made this pass 30 % slower
            v0 = V[0, c, col:col + P]
            v1 = V[1, c, col:col + P]
            v2 = V[2, c, col:col + P]
            v3 = V[3, c, col:col + P]
            v4 = V[4, c, col:col + P]
            v5 = V[5, c, col:col + P]
            v6 = V[6, c, col:col + P]
            for q in range(U):  # row 0: the e terms; nothing above
                v3[q] = x[2 * q]
                v5[q] = x[2 * q + 1] - x[2 * q]
                v0[q] = 0
                v2[q] = 0
                v4[q] = 0
                v6[q] = 0
            for q in range(U - 1):
                v1[q + 1] = x[2 * q + 1] - x[2 * q + 2]
            # rows 1 .. H-1, pair q = U + t: d's are x[2t - 1 .. 2t + 2], e's x[W + 2t - 1 .. W + 2t + 1]
            xd = x[:HW - Wd]
            xd1 = x[1:]
            xe = x[Wd:]
            xe1 = x[Wd - 1:]
            o0 = v0[U + 1:]
            o1 = v1[U:]
            o2 = v2[U:]
            o3 = v3[U:]
            o4 = v4[U:]
            o5 = v5[U:]
            o6 = v6[U:]
            for t in range(R - 1):
                o0[t] = xd1[2 * t] - xd1[2 * t + 2]  # d0 - d2 of pair U + 1 + t
            for t in range(R):  # at most three store streams per loop: more and LLVM's runtime alias
                e0 = xe1[2 * t]  # checks exceed its limit and the loop stays scalar
                e1 = xe[2 * t]
                o1[t] = e0 - e1
                o3[t] = e1
                o5[t] = xe[2 * t + 1] - e1
            for t in range(R):
                d1 = xd[2 * t]
                d2 = xd[2 * t + 1]
                o2[t] = d1 + d2
                o4[t] = d1 - x[2 * t + 2]
                o6[t] = d2 - d1
            for i in range(H):  # the row edges
                q = i * U
                v1[q] = -x[2 * q]
                if i > 0:
                    v0[q] = -x[2 * q + 1 - Wd]
                    v4[q + U - 1] = x[2 * (q + U - 1) - Wd]


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def output_transform(M, bias, y3, cn, s, m, Wd):  # pragma: no cover - compiled
    """y[n, o, i, 2u] = b + A + B + C and y[n, o, i, 2u+1] = b + B - C + D, from M = (A, B, D, C) (4, C_out, cols)."""
    C_out = M.shape[1]
    P = _pairs_geometry(y3.shape[2], Wd)[2]
    for n in range(m):
        for o in range(C_out):
            dst = y3[o, s + n] if cn else y3[s + n, o]
            A, B, D, Cc = _four_rows(M, o, n, P)
            bo = bias[o]
            for q in range(P):
                bq = bo + B[q]
                dst[2 * q] = bq + A[q] + Cc[q]
                dst[2 * q + 1] = bq - Cc[q] + D[q]


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def output_transform_backward(dy3, cn, s, m, Wd, dM, db):  # pragma: no cover - compiled
    """dM = (dy_j, dy_j + dy_{j+1}, dy_{j+1}, dy_j - dy_{j+1}) for images ``s .. s+m-1``; ``db += `` their sums."""
    C_out = dM.shape[1]
    P = _pairs_geometry(dy3.shape[2], Wd)[2]
    for n in range(m):
        for o in range(C_out):
            src = dy3[o, s + n] if cn else dy3[s + n, o]
            A, B, D, Cc = _four_rows(dM, o, n, P)
            for q in range(P):  # two store streams per loop (see input_transform)
                A[q] = src[2 * q]
                D[q] = src[2 * q + 1]
            for q in range(P):
                B[q] = A[q] + D[q]
                Cc[q] = A[q] - D[q]
            acc = dM.dtype.type(0)
            for q in range(P):
                acc += B[q]
            db[o] += acc


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def input_transform_backward(dV, dx3, cn, s, m, Wd):  # pragma: no cover - compiled
    """dx of images ``s .. s+m-1`` from the transformed inputs' gradients ``dV`` (7, C_in, cols), the adjoint
    of :func:`input_transform`: pixel (r, 2u) is :math:`e_1` of pair (r, u) and :math:`d_1` of pair
    (r + 1, u) and :math:`d_3` of (r + 1, u - 1); pixel (r, 2u + 1) is :math:`e_2` of (r, u), :math:`e_0`
    of (r, u + 1), :math:`d_2` of (r + 1, u) and :math:`d_0` of (r + 1, u + 1).  Whole-plane loops as in
    the forward, then the terms that crossed a row edge are taken back."""
    C = dx3.shape[0] if cn else dx3.shape[1]
    H, U, P = _pairs_geometry(dx3.shape[2], Wd)
    for n in range(m):
        for c in range(C):
            dx = dx3[c, s + n] if cn else dx3[s + n, c]
            col = n * P  # the slices written out, as in input_transform
            g0 = dV[0, c, col:col + P]
            g1 = dV[1, c, col:col + P]
            g2 = dV[2, c, col:col + P]
            g3 = dV[3, c, col:col + P]
            g4 = dV[4, c, col:col + P]
            g5 = dV[5, c, col:col + P]
            g6 = dV[6, c, col:col + P]
            for q in range(P):  # the e terms of the pixel's own row (indices 2q + const: see input_transform)
                dx[2 * q] = g3[q] - g1[q] - g5[q]
                dx[2 * q + 1] = g5[q]
            g1n = g1[1:]
            for q in range(P - 1):
                dx[2 * q + 1] += g1n[q]
            g0d, g2d, g4d, g6d = g0[U:], g2[U:], g4[U:], g6[U:]  # the pairs of the row below
            for q in range(P - U):  # the d terms of the row below
                dx[2 * q] += g2d[q] - g6d[q] + g4d[q]
                dx[2 * q + 1] += g2d[q] + g6d[q] - g0d[q]
            g0n = g0[U + 1:]
            dx2 = dx[2:]
            for q in range(P - U - 1):
                dx[2 * q + 1] += g0n[q]
            for q in range(P - U - 1):
                dx2[2 * q] -= g4d[q]
            for i in range(H - 1):  # take back what crossed from the last pair of row i to the first of row i + 1
                q = i * U + U - 1
                dx[2 * q + 1] -= g1[q + 1]
                if i < H - 2:
                    dx[2 * q + 1] -= g0[q + U + 1]
                    dx[2 * q + 2] += g4[q + U]


# ----------------------------------------------------------------------------- a chunk of images
_RM, _NT, _TR = 101, 111, 112  # CBLAS row-major, no transpose, transpose
_BLAS: dict = {}


def _cblas_gemm(dtype):
    """The address of NumPy's own ``cblas_?gemm`` (64-bit integers), or None where it has none.

    The library is the one ``threadpoolctl`` reports for NumPy, so ``threadpool_limits`` governs it; the
    symbol is ``scipy_cblas_sgemm64_`` in NumPy's wheels.  Passed to the compiled chunk functions as an
    integer and called through :func:`_gemm`, so they stay cacheable, call BLAS without going back to
    Python, and cost no more to dispatch than any integer argument (a ctypes function argument is typed
    anew on every call, about 8 us).
    """
    dtype = np.dtype(dtype)
    if dtype not in _BLAS:
        _BLAS[dtype] = _find_gemm("s" if dtype == np.float32 else "d")
    return _BLAS[dtype]


def _find_gemm(letter):
    import ctypes

    from . import _threads

    for controller in _threads._blas_controllers():
        try:
            lib = ctypes.CDLL(str(controller.filepath))
        except OSError:
            continue
        for name in (f"scipy_cblas_{letter}gemm64_", f"cblas_{letter}gemm64_"):
            fn = getattr(lib, name, None)
            if fn is not None:
                return ctypes.cast(fn, ctypes.c_void_p).value
    return None


@intrinsic
def _gemm(typingctx, addr, order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):
    """``cblas_?gemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)`` at the integer address
    ``addr``, with ``A``, ``B``, ``C`` integer data addresses (``arr.ctypes.data``) and 64-bit integers;
    ``alpha`` / ``beta`` of the matrices' float type."""
    sig = types.void(addr, order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)

    def codegen(context, builder, signature, args):
        i32, i64, vp = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
        real = context.get_value_type(signature.args[7])
        fnty = ir.FunctionType(ir.VoidType(), [i32] * 3 + [i64] * 3 + [real, vp, i64, vp, i64, real, vp, i64])
        a = args[1:]
        call = [builder.trunc(a[0], i32), builder.trunc(a[1], i32), builder.trunc(a[2], i32), a[3], a[4], a[5],
                a[6], builder.inttoptr(a[7], vp), a[8], builder.inttoptr(a[9], vp), a[10], a[11],
                builder.inttoptr(a[12], vp), a[13]]
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), call)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _at(a, i):  # pragma: no cover - compiled
    """The data address of ``a[i]``."""
    return a[i].ctypes.data


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _forward_chunk_blas(gemm, x3, cn, s, m, Wd, U3, Uc, bias, y3, V, M):  # pragma: no cover - compiled
    """:func:`forward_chunk` compiled, the four GEMMs by ``gemm`` (CBLAS, row-major)."""
    C_out, C2 = U3.shape[1], U3.shape[2]
    ld = V.shape[2]
    c = m * (x3.shape[2] // 2)
    one, zero = U3.dtype.type(1), U3.dtype.type(0)
    input_transform(x3, cn, s, m, Wd, V)
    for g in range(3):  # groups A, B, D: V rows 2g, 2g + 1 stacked are (2 C_in, ld)
        _gemm(gemm, _RM, _NT, _NT, C_out, c, C2, one, _at(U3, g), C2, _at(V, 2 * g), ld, zero, _at(M, g), ld)
    _gemm(gemm, _RM, _NT, _NT, C_out, c, C2 // 2, one, Uc.ctypes.data, C2 // 2, _at(V, 6), ld, zero, _at(M, 3), ld)
    output_transform(M, bias, y3, cn, s, m, Wd)


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _backward_chunk_blas(gemm, x3, sx, dy3, dx3, sd, cn, m, Wd, U3, Uc, V, M, dU3T, dUcT, db, first,
                         need_dx):  # pragma: no cover - compiled
    """:func:`backward_chunk` compiled; the weight-gradient sums carried by BLAS's ``beta``."""
    C_out, C2 = U3.shape[1], U3.shape[2]
    C = C2 // 2
    ld = V.shape[2]
    c = m * (x3.shape[2] // 2)
    one, zero = U3.dtype.type(1), U3.dtype.type(0)
    beta = zero if first else one
    input_transform(x3, cn, sx, m, Wd, V)
    if first:
        db[:] = 0
    output_transform_backward(dy3, cn, sd, m, Wd, M, db)
    for g in range(3):  # dU_g^T (+)= V_g M_g^T
        _gemm(gemm, _RM, _NT, _TR, C2, C_out, c, one, _at(V, 2 * g), ld, _at(M, g), ld, beta, _at(dU3T, g), C_out)
    _gemm(gemm, _RM, _NT, _TR, C, C_out, c, one, _at(V, 6), ld, _at(M, 3), ld, beta, dUcT.ctypes.data, C_out)
    if need_dx:  # dV_g = U_g^T dM_g into V, then back to the pixels
        for g in range(3):
            _gemm(gemm, _RM, _TR, _NT, C2, c, C_out, one, _at(U3, g), C2, _at(M, g), ld, zero, _at(V, 2 * g), ld)
        _gemm(gemm, _RM, _TR, _NT, C, c, C_out, one, Uc.ctypes.data, C, _at(M, 3), ld, zero, _at(V, 6), ld)
        input_transform_backward(V, dx3, cn, sd, m, Wd)


def forward_chunk(x3, cn, s, m, Wd, U3, Uc, bias, y3, V, M):
    """Images ``s .. s+m-1`` of ``x3`` into the same images of ``y3`` (with the bias) ``[eq:winograd-f23]``:
    the input transform into ``V`` (7, C_in, >= m P), the four GEMMs into ``M`` (4, C_out, same), the output
    transform.  ``x3`` / ``y3`` are (N, C, HW), or (C, N, HW) with ``cn``.  One compiled call into NumPy's
    own CBLAS where it has one (:func:`_cblas_gemm`), else NumPy's ``matmul``; the two agree to rounding."""
    gemm = _cblas_gemm(V.dtype)
    if gemm is not None:
        _forward_chunk_blas(gemm, x3, cn, s, m, Wd, U3, Uc, bias, y3, V, M)
        return
    c = m * (x3.shape[2] // 2)
    input_transform(x3, cn, s, m, Wd, V)
    V3 = V[:6].reshape(3, -1, V.shape[2])
    np.matmul(U3, V3[:, :, :c], out=M[:3, :, :c])
    np.matmul(Uc, V[6, :, :c], out=M[3, :, :c])
    output_transform(M, bias, y3, cn, s, m, Wd)


def weight_sums(C_in, C_out, dtype):
    """Accumulators of one worker's weight gradients: transposed (3, 2 C_in, C_out) and (C_in, C_out), and db."""
    return np.empty((3, 2 * C_in, C_out), dtype), np.empty((C_in, C_out), dtype), np.zeros(C_out, dtype)


def backward_chunk(x3, sx, dy3, dx3, sd, cn, m, Wd, U3, Uc, V, M, sums, first):
    """One chunk of the backward pass ``[eq:masked-conv-backward-w]`` ``[eq:masked-conv-backward-x]``.

    Images ``sx .. sx+m-1`` of ``x3`` and ``sd .. sd+m-1`` of ``dy3`` / ``dx3`` (``dx3`` None: no input
    gradient).  ``sums`` from :func:`weight_sums` is overwritten when ``first`` (db zeroed), else added to.
    The weight gradients are formed transposed, (2 C_in x pairs)(pairs x C_out): OpenBLAS runs these
    products faster with the longer side as rows (5.8 against 6.3 ms for a batch of 32 at 64 channels).
    One compiled call into NumPy's own CBLAS where it has one, with ``beta = 1`` carrying the sums.
    """
    dU3T, dUcT, db = sums
    gemm = _cblas_gemm(V.dtype)
    if gemm is not None:
        _backward_chunk_blas(gemm, x3, sx, dy3, dx3 if dx3 is not None else V[:0], sd, cn, m, Wd, U3, Uc, V, M,
                             dU3T, dUcT, db, first, dx3 is not None)
        return
    c = m * (x3.shape[2] // 2)
    input_transform(x3, cn, sx, m, Wd, V)
    if first:
        db[:] = 0
    output_transform_backward(dy3, cn, sd, m, Wd, M, db)
    V3 = V[:6].reshape(3, -1, V.shape[2])
    if first:
        np.matmul(V3[:, :, :c], M[:3, :, :c].transpose(0, 2, 1), out=dU3T)
        np.matmul(V[6, :, :c], M[3, :, :c].T, out=dUcT)
    else:
        dU3T += np.matmul(V3[:, :, :c], M[:3, :, :c].transpose(0, 2, 1))
        dUcT += np.matmul(V[6, :, :c], M[3, :, :c].T)
    if dx3 is not None:
        np.matmul(U3.transpose(0, 2, 1), M[:3, :, :c], out=V3[:, :, :c])
        np.matmul(Uc.T, M[3, :, :c], out=V[6, :, :c])
        input_transform_backward(V, dx3, cn, sd, m, Wd)


def weight_gradient(sums):
    """The packed weight's gradient (C_out, C_in, 5) and db from summed :func:`weight_sums`."""
    dU3T, dUcT, db = sums
    return weight_transform_backward(dU3T.transpose(0, 2, 1), dUcT.T), db


# ----------------------------------------------------------------------------- NumPy twins
def _pairs(x, Wd):
    """Zero-padded rows of x (N, C, H, W) as d0..d3 (row above) and e0..e2 (current row), each (N, C, H, U)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 0), (1, 1)))  # a zero row above, a zero column each side
    d = [xp[:, :, :-1, 1 + k - 1:1 + k - 1 + Wd:2] for k in range(4)]  # columns j-1 .. j+2 of row i-1
    e = [xp[:, :, 1:, 1 + k - 1:1 + k - 1 + Wd:2] for k in range(3)]  # columns j-1 .. j+1 of row i
    return d, e


def input_transform_reference(x):
    """NumPy twin of :func:`input_transform` for all images of x (N, C, H, W): V of shape (7, C, N H W/2)."""
    N, C, H, Wd = x.shape
    d, e = _pairs(x, Wd)
    parts = [d[0] - d[2], e[0] - e[1], d[1] + d[2], e[1], d[1] - d[3], e[2] - e[1], d[2] - d[1]]
    return np.stack([p.transpose(1, 0, 2, 3).reshape(C, -1) for p in parts])


def output_transform_reference(M, bias, N, H, Wd):
    """NumPy twin of :func:`output_transform`: y of shape (N, C_out, H, W)."""
    A, B, D, Cc = (a.reshape(-1, N, H, Wd // 2).transpose(1, 0, 2, 3) for a in M)
    y = np.empty((N, M.shape[1], H, Wd), M.dtype)
    y[..., 0::2] = A + B + Cc
    y[..., 1::2] = B - Cc + D
    return y + bias[None, :, None, None]


def output_transform_backward_reference(dy):
    """NumPy twin of :func:`output_transform_backward`: ``(dM, db)``."""
    d0, d1 = dy[..., 0::2], dy[..., 1::2]
    dM = np.stack([a.transpose(1, 0, 2, 3).reshape(dy.shape[1], -1) for a in (d0, d0 + d1, d1, d0 - d1)])
    return dM, dy.sum(axis=(0, 2, 3))


def input_transform_backward_reference(dV, N, H, Wd):
    """NumPy twin of :func:`input_transform_backward`: dx of shape (N, C, H, W), the adjoint of the transform."""
    C = dV.shape[1]
    g = [a.reshape(C, N, H, Wd // 2).transpose(1, 0, 2, 3) for a in dV]
    dxp = np.zeros((N, C, H + 1, Wd + 2), dV.dtype)  # the padded frame of _pairs
    dd = [g[0] * 0, g[0] * 0, g[0] * 0, g[0] * 0]
    dd[0] = g[0]
    dd[2] = -g[0] + g[2] + g[6]
    dd[1] = g[2] + g[4] - g[6]
    dd[3] = -g[4]
    de = [g[1], -g[1] + g[3] - g[5], g[5]]
    for k in range(4):
        dxp[:, :, :-1, 1 + k - 1:1 + k - 1 + Wd:2] += dd[k]
    for k in range(3):
        dxp[:, :, 1:, 1 + k - 1:1 + k - 1 + Wd:2] += de[k]
    return dxp[:, :, 1:, 1:Wd + 1]
