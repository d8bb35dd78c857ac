"""Nearest-codebook search (the VQ-VAE quantiser): a BLAS screen plus a Numba argmin, beside its
NumPy ``*_reference`` twin.

For every row ``x_n`` the index of the nearest code vector ``e_k`` in squared Euclidean distance
``[eq:vq-nearest]``.  Because ``|x - e_k|^2 = |x|^2 + |e_k|^2 - 2 x.e_k`` and ``|x|^2`` does not
depend on ``k``, the argmin only needs the scores ``s_nk = 1/2 |e_k|^2 - x_n.e_k``
``[eq:vq-nearest-score]``, whose bulk is one matrix product.  The search therefore runs in chunks
of rows, with a (rows, K) score buffer of about 1 MiB allocated once (cache-sized, so steps 2 and 3
read the scores from L2; the N x K distance matrix is never held):

1. one BLAS GEMM gives the chunk's scores, ``[x, 1] @ [-e_k, |e_k|^2 / 2]^T`` (the half norms ride
   along as an extra column, so no separate pass adds them);
2. ``np.argmin`` over each row of the buffer (NumPy's SIMD argmin);
3. a serial Numba pass that counts the codes whose score lies within a proven rounding bound of
   the row's minimum ``[eq:vq-screen-bound]`` and re-scores every such code *exactly*: the squared
   distance summed directly in float64.  The answer is the lowest index among the codes with the
   smallest direct distance -- ties resolve to the lowest index, as ``np.argmin`` does -- and the
   returned distance is that direct sum (cast to the working dtype), which restores the dropped
   ``|x|^2`` without the cancellation of ``|x|^2 + 2 s_nk`` (that form can even come out
   negative in float32 when ``x`` sits on a code).

Usually a single code survives the screen, so step 3 costs one vectorised comparison per score
next to the GEMM's D multiply-adds (and the direct distance of that code is summed only when the
caller asks for distances).

**Threads.**  With one BLAS thread the chunks run in turn.  With several (and at least two chunks
of rows) the rows are split into that many contiguous ranges, each searched by a thread of its own
with its own buffers while BLAS runs at one thread (:func:`one_blas_thread`, restored afterwards):
every step -- GEMM, argmin, screen -- is then parallel, and no BLAS pool synchronises per call or
spins between calls.  (Earlier versions kept BLAS threaded over 8 MiB chunks and ran steps 2-3 on
one core; a ``prange`` screen between threaded GEMMs was slower still, PERFORMANCE.md pitfall 1.)
Small searches (fewer than two chunks) run serially with threaded BLAS over one 8 MiB chunk.
Results do not depend on the chunk size or on the number of threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validation import check_array
from ._threads import blas_threads, one_blas_thread, thread_pool

__all__ = ["nearest_codebook", "nearest_codebook_reference", "code_sums", "code_sums_reference"]

# GEMM chunk: a (rows, K) score buffer of 1 MiB (cache-sized, so the argmin and the screen read the
# scores from L2) when each GEMM runs on one BLAS thread; 8 MiB (4096 rows at K = 512, float32) for a
# small search left to threaded BLAS, whose threads synchronise once per GEMM call (1 MiB chunks were
# 3x slower there).
_CHUNK_BYTES = 1 << 23
_CHUNK_BYTES_SERIAL = 1 << 20
_MIN_ROWS, _MAX_ROWS = 256, 4096


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _squared_distance(x, n, codebook, k):
    """``sum_d (x[n, d] - codebook[k, d])^2`` summed in float64 ``[eq:vq-nearest]``.

    Eight running sums over d = j (mod 8), combined pairwise, then the last D mod 8 terms in order:
    NumPy's pairwise-sum order for D <= 128, and eight independent chains instead of one long
    dependency chain (a single running sum leaves the core waiting on each add's latency).
    ``codebook`` may be a single zero row (``k = 0``): the squared norm of ``x[n]``.
    """
    a, e = x[n], codebook[k]
    D = a.size
    r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = 0.0
    top = D - D % 8
    for d in range(0, top, 8):
        e0, e1 = np.float64(a[d]) - np.float64(e[d]), np.float64(a[d + 1]) - np.float64(e[d + 1])
        e2, e3 = np.float64(a[d + 2]) - np.float64(e[d + 2]), np.float64(a[d + 3]) - np.float64(e[d + 3])
        e4, e5 = np.float64(a[d + 4]) - np.float64(e[d + 4]), np.float64(a[d + 5]) - np.float64(e[d + 5])
        e6, e7 = np.float64(a[d + 6]) - np.float64(e[d + 6]), np.float64(a[d + 7]) - np.float64(e[d + 7])
        r0 += e0 * e0
        r1 += e1 * e1
        r2 += e2 * e2
        r3 += e3 * e3
        r4 += e4 * e4
        r5 += e5 * e5
        r6 += e6 * e6
        r7 += e7 * e7
    dist = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for d in range(top, D):
        diff = np.float64(a[d]) - np.float64(e[d])
        dist += diff * diff
    return dist


@njit(parallel=False, cache=True, error_model="numpy", fastmath=False, nogil=True)
def _refine_chunk(x, codebook, scores, first, slack_a, slack_b, start, indices, distances, want_distances,
                  thr, counts):
    """Finish rows ``start : start + B`` of the search from their GEMM scores.

    ``scores[t, k]`` approximates ``s_k = |e_k|^2 / 2 - x_{start+t} . e_k`` ``[eq:vq-nearest-score]``
    (computed by BLAS in the input dtype), ``first[t]`` is its argmin and
    ``slack_a |x_n| + slack_b`` the float64 screening margin ``[eq:vq-screen-bound]`` (the row norm
    is summed here, in float64, while the row is in cache).  Every code with
    ``s_k <= s_first + slack`` has its squared distance summed directly in float64
    ``[eq:vq-nearest]``; the smallest wins, the lowest index on ties.  Usually only ``first``
    survives, and the pass costs one vectorised comparison per score; its distance is then summed
    only if ``want_distances``.  ``thr`` (B,) in the scores' dtype and ``counts`` (B,) int32 are
    scratch.  Three loops (thresholds, counts, answers) rather than one: the counting loop on its
    own compiles to a tight vector loop, about twice as fast as the same loop inside the row loop.
    """
    B, K = scores.shape
    thr_box = np.empty(1, dtype=scores.dtype)
    origin = np.zeros((1, x.shape[1]), dtype=x.dtype)  # the distance to it is the row's squared norm
    for t in range(B):  # each row's threshold, rounded up into the scores' dtype
        threshold = np.float64(scores[t, first[t]]) + (slack_a * np.sqrt(_squared_distance(x, start + t, origin, 0)) + slack_b)
        thr_box[0] = threshold
        if thr_box[0] < threshold:
            thr_box[0] = np.nextafter(thr_box[0], np.inf)
        thr[t] = thr_box[0]
    for t in range(B):  # the codes that survive the screen
        row = scores[t]
        th = thr[t]
        c = np.int32(0)
        for k in range(K):
            c = c + np.int32(row[k] <= th)  # int32 adds of comparisons: vectorises
        counts[t] = c
    for t in range(B):
        n = start + t
        best_k = first[t]
        if counts[t] <= 1:  # the usual case: only the GEMM's argmin survives the screen
            indices[n] = best_k
            if want_distances:
                distances[n] = _squared_distance(x, n, codebook, best_k)
            continue
        best_dist = np.inf
        for k in range(K):
            if scores[t, k] <= thr[t]:
                dist = _squared_distance(x, n, codebook, k)
                if dist < best_dist:  # strict: an equal distance keeps the lower index
                    best_dist = dist
                    best_k = k
        indices[n] = best_k
        distances[n] = best_dist


def _screen_slack(D, dtype, half_sq_norm):
    """The per-row screening margin ``4 delta_n = a |x_n| + b``, float64: returns ``(a, b)`` ``[eq:vq-screen-bound]``.

    The GEMM computes each score as a dot product of length D + 1 in the working precision (unit
    roundoff ``u``); in whatever order BLAS sums, ``|fl(a.b) - a.b| <= gamma_{D+1} sum_i |a_i b_i|``
    with ``gamma_m = m u / (1 - m u)``, and ``sum_i |a_i b_i| <= |x_n| |e_k| + |e_k|^2 / 2``.
    Rounding ``|e_k|^2 / 2`` to the working dtype adds ``u |e_k|^2 / 2``.  So every computed score
    is within ``delta_n = gamma_{D+2} (|x_n| E + E^2 / 2)`` of the exact one (``E = max_k |e_k|``),
    and the exact argmin scores at most ``2 delta_n`` above the computed minimum.  The margin
    doubles that again, to absorb the float64 rounding of the norms themselves, and an absolute
    ``(D + 2)`` smallest subnormals covers products that underflow (where relative bounds fail).
    """
    u = np.finfo(dtype).eps / 2.0
    gamma = (D + 2) * u / (1.0 - (D + 2) * u)
    E = np.sqrt(2.0 * half_sq_norm.max())
    tiny = (D + 2) * float(np.finfo(dtype).smallest_subnormal)
    return 4.0 * gamma * E, 4.0 * gamma * 0.5 * E * E + 4.0 * tiny


def _rows(N, K, dtype, chunk_bytes):
    """Rows per GEMM chunk: a (rows, K) score buffer of about ``chunk_bytes``."""
    return min(N, max(_MIN_ROWS, min(_MAX_ROWS, chunk_bytes // (K * dtype.itemsize))))


def _search_rows(x, codebook, codebook_aug_t, slack_a, slack_b, indices, distances, return_distances,
                 lo, hi, rows):
    """Rows ``lo:hi`` of the search, ``rows`` at a time, with buffers of its own (one call per thread)."""
    D, dtype = x.shape[1], x.dtype
    rows = max(1, min(rows, hi - lo))
    x_aug = np.empty((rows, D + 1), dtype=dtype)
    x_aug[:, D] = 1.0
    scores = np.empty((rows, codebook_aug_t.shape[1]), dtype=dtype)
    thr, counts = np.empty(rows, dtype=dtype), np.empty(rows, dtype=np.int32)
    for start in range(lo, hi, rows):
        B = min(hi, start + rows) - start
        x_aug[:B, :D] = x[start : start + B]
        np.dot(x_aug[:B], codebook_aug_t, out=scores[:B])  # [eq:vq-nearest-score]
        first = np.argmin(scores[:B], axis=1)
        _refine_chunk(x, codebook, scores[:B], first, slack_a, slack_b, start, indices, distances,
                      return_distances, thr, counts)


def nearest_codebook(x, codebook, *, return_distances: bool = False):
    """Index of the nearest code vector for every row, in squared Euclidean distance.

    Parameters
    ----------
    x : ndarray of shape (N, D)
        Query vectors (e.g. encoder outputs ``z_e``), float32 or float64, finite.  N may be 0.
    codebook : ndarray of shape (K, D)
        Code vectors ``e_k``, K >= 1, finite.
    return_distances : bool
        Also return the squared distance to the chosen code.

    Returns
    -------
    indices : ndarray of shape (N,), int64
        ``argmin_k |x_n - e_k|^2`` ``[eq:vq-nearest]``; ties go to the lowest index.
    distances : ndarray of shape (N,), only if ``return_distances``
        ``min_k |x_n - e_k|^2`` in the common dtype of ``x`` and ``codebook`` (float32 only if
        both are float32).

    Notes
    -----
    The argmin uses the scores ``s_nk = |e_k|^2 / 2 - x_n . e_k`` ``[eq:vq-nearest-score]``:
    ``|x_n|^2`` is dropped because it is the same for every k.  The scores come from a chunked
    BLAS GEMM (one buffer of 1-8 MiB, never the N x K matrix); every code whose score is within a
    proven rounding bound of the row's minimum ``[eq:vq-screen-bound]`` is re-scored by summing ``(x_nd - e_kd)^2`` directly in float64, and
    that direct sum decides the argmin and is the returned distance (``|x_n|^2`` is thus restored
    without the cancellation of ``|x_n|^2 + 2 s_nk``).  Near-ties closer than the float64
    rounding of that sum (relative ~ D 1e-16) may resolve either way; exact ties, such as
    duplicated code vectors, always give the lowest index.
    """
    x = check_array(x, "x", dtype=None, min_rows=0)
    codebook = check_array(codebook, "codebook", dtype=None)
    if codebook.shape[1] != x.shape[1]:
        raise ValueError(
            f"x and codebook must have the same number of columns D: x has shape {x.shape}, "
            f"codebook has shape {codebook.shape}"
        )
    dtype = np.promote_types(x.dtype, codebook.dtype)
    x = x.astype(dtype, copy=False)
    codebook = codebook.astype(dtype, copy=False)
    N, D = x.shape
    K = codebook.shape[0]
    half_sq_norm = 0.5 * np.einsum("kd,kd->k", codebook, codebook, dtype=np.float64)
    big = float(np.finfo(dtype).max) / 4.0
    if half_sq_norm.max() > big:
        raise ValueError(f"codebook has vectors whose squared norm overflows {dtype}; rescale it")
    indices = np.empty(N, dtype=np.int64)
    distances = np.empty(N, dtype=np.float64)
    if N:
        if max(x.max(), -x.min()) > np.sqrt(big / D):  # |x_n|^2 <= D max|x|^2: the norms only when needed
            x_sq_norm = np.einsum("nd,nd->n", x, x, dtype=np.float64)
            if x_sq_norm.max() > big:
                raise ValueError(f"x has rows whose squared norm overflows {dtype}; rescale it")
        slack_a, slack_b = _screen_slack(D, dtype, half_sq_norm)
        # scores as one GEMM [eq:vq-nearest-score]: [x, 1] . [-e_k, |e_k|^2 / 2]
        codebook_aug_t = np.empty((D + 1, K), dtype=dtype)  # C-ordered: ~7 % faster GEMMs than a transposed view
        np.negative(codebook.T, out=codebook_aug_t[:D])
        codebook_aug_t[D] = half_sq_norm
        search = (x, codebook, codebook_aug_t, slack_a, slack_b, indices, distances, return_distances)
        threads = blas_threads()
        serial_rows = _rows(N, K, dtype, _CHUNK_BYTES_SERIAL)
        if threads > 1 and N >= 2 * serial_rows:  # row ranges on threads of their own, BLAS at one thread each
            bounds = np.linspace(0, N, threads + 1).astype(int)
            with one_blas_thread():
                list(thread_pool(threads).map(lambda i: _search_rows(*search, bounds[i], bounds[i + 1], serial_rows),
                                        range(threads)))
        else:
            _search_rows(*search, 0, N, serial_rows if threads == 1 else _rows(N, K, dtype, _CHUNK_BYTES))
    if return_distances:
        return indices, distances.astype(dtype, copy=False)
    return indices


def nearest_codebook_reference(x, codebook, *, return_distances: bool = False):
    """Plain-NumPy twin of :func:`nearest_codebook` (brute force, no checks).

    Forms the full (N, K) matrix of squared distances ``sum_d (x_nd - e_kd)^2`` in float64
    ``[eq:vq-nearest]`` and takes ``np.argmin`` (lowest index on ties).
    """
    x = np.asarray(x)
    codebook = np.asarray(codebook)
    dtype = np.promote_types(x.dtype, codebook.dtype)
    diff = x.astype(np.float64)[:, None, :] - codebook.astype(np.float64)[None, :, :]
    sq_dist = np.sum(diff * diff, axis=2)
    indices = np.argmin(sq_dist, axis=1).astype(np.int64) if x.shape[0] else np.empty(0, np.int64)
    if return_distances:
        dist = sq_dist[np.arange(x.shape[0]), indices].astype(dtype)
        return indices, dist
    return indices


# ----------------------------------------------------------------------------- per-code sums
@njit(cache=True, error_model="numpy", fastmath=False)
def _code_sums(out, indices, values, scale):  # pragma: no cover - compiled
    for i in range(indices.size):
        o = out[indices[i]]
        v = values[i]
        for c in range(v.size):
            o[c] += scale * v[c]


def code_sums(indices, values, n_codes, *, scale=1.0):
    """``out[k] = sum_{i: indices[i] = k} scale * values[i]``: the rows of ``values`` summed per code.

    The VQ-VAE needs it twice: the codebook gradient of :math:`\\|sg[z_e] - e\\|^2` (``scale =
    -2/N``, ``values = z_e - e``) and the EMA statistics ``[eq:vq-ema]`` (``values = z_e``).  A
    serial Numba loop, in the order of the rows -- so the result is bit-identical to its twin
    :func:`code_sums_reference` (``np.add.at``), which took ~0.5 ms of a 12 ms VQ-VAE step.

    Parameters
    ----------
    indices : ndarray of shape (B,), integer
        Codes in ``[0, n_codes)``.
    values : ndarray of shape (B, C), float32 or float64
    n_codes : int
    scale : float
        Applied to every row before it is added (in the dtype of ``values``).

    Returns
    -------
    ndarray of shape (n_codes, C), the dtype of ``values``
    """
    values = check_array(values, "values", dtype=None, min_rows=0)
    indices = np.asarray(indices)
    if indices.shape != values.shape[:1] or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers of shape ({values.shape[0]},) to match values "
                         f"{values.shape}, got {indices.dtype} {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_codes):
        raise ValueError(f"indices must lie in [0, {n_codes}), got [{indices.min()}, {indices.max()}]")
    out = np.zeros((n_codes, values.shape[1]), dtype=values.dtype)
    _code_sums(out, indices.astype(np.int64, copy=False), values, values.dtype.type(scale))
    return out


def code_sums_reference(indices, values, n_codes, *, scale=1.0):
    """NumPy twin of :func:`code_sums`: ``np.add.at`` of the scaled rows."""
    values = np.asarray(values)
    out = np.zeros((n_codes, values.shape[1]), dtype=values.dtype)
    np.add.at(out, np.asarray(indices), values.dtype.type(scale) * values)
    return out
