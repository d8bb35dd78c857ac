"""Sample-based comparison of two distributions: the kernel maximum mean discrepancy (MMD).

A model without a likelihood (a GAN) can still be judged by how far its samples lie from the data.
:func:`mmd2` estimates the squared MMD with the Gaussian kernel ``[eq:mmd-gaussian-kernel]``, the
unbiased U-statistic ``[eq:mmd-unbiased]`` by default or the biased V-statistic ``[eq:mmd-biased]``,
with the bandwidth given or set by the median heuristic on the pooled sample ``[eq:mmd-median]``;
:func:`mmd_permutation_test` adds the permutation p-value ``[eq:mmd-permutation-p]``.
Derivations: ``docs/gan.md`` (section "Comparing samples: the MMD").

Memory: every kernel and distance computation runs over blocks of rows against all columns (about
8 MiB per block), so no N x M x D temporary and no N x M matrix is ever held.  The median of the
:math:`(m+n)(m+n-1)/2` pooled pair distances is exact: up to 4M pairs they are held and passed to
``np.median``; beyond, a selection by histogram refinement streams them in passes.  All arithmetic is
float64 (inputs are converted); the pooled sample is centred first (distances do not change) so that
the expansion :math:`\\|a\\|^2 + \\|b\\|^2 - 2a^\\top b` does not cancel against a large offset.
"""
from __future__ import annotations

import numpy as np

from ._validation import check_array, check_option, check_positive_float, check_positive_int, check_rng

__all__ = ["mmd2", "mmd_permutation_test"]

_BLOCK_BYTES = 1 << 23  # one (rows, columns) float64 block of squared distances / kernel values
_MEDIAN_DIRECT_PAIRS = 1 << 22  # up to this many pair distances are held at once for np.median
_SELECT_BINS = 4096  # histogram bins per refinement pass of the streamed selection
_SELECT_KEEP = 1 << 20  # survivors held for the final np.partition of the streamed selection
_SELECT_MAX_LEVELS = 64  # never reached in practice: each level narrows the range 4096-fold
_KERNEL_MATRIX_BYTES = 1 << 27  # the permutation test holds the (m+n)^2 kernel matrix up to this size
_PERMUTATION_BATCH = 64  # permutations per GEMM in the permutation test


# --------------------------------------------------------------------------- checks
def _check_samples(X, Y, unbiased):
    if not isinstance(unbiased, (bool, np.bool_)):
        raise TypeError(f"unbiased must be True or False, got {type(unbiased).__name__} ({unbiased!r})")
    min_rows = 2 if unbiased else 1
    why = " (the unbiased estimator averages over pairs of distinct rows)" if unbiased else ""
    X = check_array(X, "X")
    Y = check_array(Y, "Y")
    for name, A in (("X", X), ("Y", Y)):
        if A.shape[0] < min_rows:
            raise ValueError(f"{name} must have at least {min_rows} row(s){why}, got shape {A.shape}")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y must have the same number of columns, got X {X.shape} and Y {Y.shape}")
    return X, Y


def _pooled(X, Y):
    """Centred pooled sample Z = [X; Y] - mean (distances unchanged) and its squared row norms."""
    Z = np.concatenate([X, Y])
    Z -= Z.mean(axis=0)
    return Z, np.einsum("ij,ij->i", Z, Z)


def _gamma(bandwidth, Z, sq):
    """:math:`1 / (2 s^2)` for the given bandwidth ``s`` or the median heuristic ``[eq:mmd-median]``."""
    if isinstance(bandwidth, str):
        check_option(bandwidth, "bandwidth", ("median",))
        s = _median_pair_distance(Z, sq)
        if not s > 0:
            raise ValueError("the median heuristic gives bandwidth 0: more than half of the pooled pairs of "
                             "rows coincide; pass a positive float bandwidth")
    else:
        s = check_positive_float(bandwidth, "bandwidth")
    if not s * s > 0:
        raise ValueError(f"bandwidth {s!r} is too small: s^2 underflows to 0")
    gamma = 0.5 / (s * s)
    if not np.isfinite(gamma):
        raise ValueError(f"bandwidth {s!r} is too small: 1 / (2 s^2) overflows")
    return gamma


# --------------------------------------------------------------------------- blocks
def _rows_per_block(n_cols):
    return max(1, _BLOCK_BYTES // (8 * max(n_cols, 1)))


def _sq_dist_block(A, a_sq, B, b_sq, out):
    """``out[i, j] = max(|a_i|^2 + |b_j|^2 - 2 a_i.b_j, 0)``, written into ``out`` (r, c)."""
    np.matmul(A, B.T, out=out)
    out *= -2.0
    out += a_sq[:, None]
    out += b_sq[None, :]
    np.maximum(out, 0.0, out=out)
    return out


def _kernel_block(A, a_sq, B, b_sq, gamma, out):
    """``out[i, j] = exp(-gamma |a_i - b_j|^2)`` ``[eq:mmd-gaussian-kernel]``."""
    _sq_dist_block(A, a_sq, B, b_sq, out)
    out *= -gamma
    return np.exp(out, out=out)


def _kernel_sums(Z, sq, m, gamma):
    """Sums of k over ordered pairs i != j within X = Z[:m], within Y = Z[m:], and over X x Y.

    Only the upper triangle of the pooled kernel matrix is formed, in row blocks that do not
    straddle m: a block of rows [s, e) against the columns [s, N) holds the square [s, e)^2 (both
    orders; its diagonal, k = 1, is left out), the pairs inside the same sample with a later column
    (counted twice: k is symmetric) and, for X rows, every X x Y pair once.
    """
    N = Z.shape[0]
    rows = _rows_per_block(N)
    buf = np.empty(rows * N)
    s_xx = s_yy = s_xy = 0.0
    for lo, hi in ((0, m), (m, N)):
        for s in range(lo, hi, rows):
            e = min(s + rows, hi)
            r = e - s
            K = _kernel_block(Z[s:e], sq[s:e], Z[s:], sq[s:], gamma, buf[:r * (N - s)].reshape(r, N - s))
            np.fill_diagonal(K[:, :r], 0.0)
            within = K[:, :r].sum() + 2.0 * K[:, r:hi - s].sum()
            if lo == 0:
                s_xx += within
                s_xy += K[:, m - s:].sum()
            else:
                s_yy += within
    return s_xx, s_yy, s_xy


def _combine(s_xx, s_yy, s_xy, m, n, unbiased):
    """The estimator from the off-diagonal sums ``[eq:mmd-unbiased]`` / ``[eq:mmd-biased]``."""
    if unbiased:
        return s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)  # [eq:mmd-unbiased]
    return (s_xx + m) / (m * m) + (s_yy + n) / (n * n) - 2.0 * s_xy / (m * n)  # k(x, x) = 1  [eq:mmd-biased]


# --------------------------------------------------------------------------- median heuristic
def _pair_distances(Z, sq):
    """Yield the distances |z_i - z_j|, i < j, in row blocks, always in the same order and rounding."""
    N = Z.shape[0]
    rows = _rows_per_block(N)
    buf = np.empty(rows * N)
    for s in range(0, N - 1, rows):
        e = min(s + rows, N)
        r = e - s
        d = np.sqrt(_sq_dist_block(Z[s:e], sq[s:e], Z[s:], sq[s:], buf[:r * (N - s)].reshape(r, N - s)))
        yield np.concatenate([d[:, :r][np.triu_indices(r, 1)], d[:, r:].ravel()])


def _bins(d, lo, scale):
    """Histogram bin of each value: monotone non-decreasing in ``d``, clipped to the bins."""
    b = np.floor((d - lo) * scale)
    np.clip(b, 0, _SELECT_BINS - 1, out=b)
    return b.astype(np.int64)


def _kth_pair_distance(Z, sq, k):
    """The k-th smallest (0-based) pair distance, streamed: histogram refinement, then np.partition.

    Each pass histograms the values that survived every earlier level (``_bins`` equal to the bin
    chosen there) and moves to the bin holding rank k.  ``_bins`` is monotone, so the values of
    lower bins all rank below those of the chosen bin; their count is carried in ``below``.  It ends
    when at most ``_SELECT_KEEP`` values survive (they are kept during the pass) or all survivors are
    equal (ties, e.g. Hamming distances of binary data).
    """
    levels = []
    lo, hi = 0.0, 2.0 * float(np.sqrt(sq.max())) * (1.0 + 1e-12)  # |z_i - z_j| <= |z_i| + |z_j|
    below = 0
    while True:
        scale = _SELECT_BINS / (hi - lo) if hi > lo else 0.0
        last = len(levels) >= _SELECT_MAX_LEVELS or not np.isfinite(scale)
        hist = np.zeros(_SELECT_BINS, dtype=np.int64)
        kept, n_kept, vmin, vmax = [], 0, np.inf, -np.inf
        for d in _pair_distances(Z, sq):
            for l_lo, l_scale, l_bin in levels:
                d = d[_bins(d, l_lo, l_scale) == l_bin]
            if d.size == 0:
                continue
            vmin, vmax = min(vmin, d.min()), max(vmax, d.max())
            if last or n_kept <= _SELECT_KEEP:
                kept.append(d)
                n_kept += d.size
            if not last:
                hist += np.bincount(_bins(d, lo, scale), minlength=_SELECT_BINS)
        rank = k - below
        if last or n_kept == hist.sum() and n_kept <= _SELECT_KEEP:
            return float(np.partition(np.concatenate(kept), rank)[rank])
        if vmin == vmax:
            return float(vmin)
        cum = np.cumsum(hist)
        b = int(np.searchsorted(cum, rank, side="right"))  # first bin with more than `rank` values up to it
        below += int(cum[b - 1]) if b else 0
        levels.append((lo, scale, b))
        width = (hi - lo) / _SELECT_BINS
        lo, hi = lo + b * width, lo + (b + 1) * width


def _median_pair_distance(Z, sq):
    """Median of |z_i - z_j| over the pooled pairs i < j, as ``np.median`` defines it ``[eq:mmd-median]``."""
    N = Z.shape[0]
    n_pairs = N * (N - 1) // 2
    if n_pairs <= _MEDIAN_DIRECT_PAIRS:
        return float(np.median(np.concatenate(list(_pair_distances(Z, sq)))))
    k_lo, k_hi = (n_pairs - 1) // 2, n_pairs // 2
    a = _kth_pair_distance(Z, sq, k_lo)
    return a if k_hi == k_lo else float(np.mean([a, _kth_pair_distance(Z, sq, k_hi)]))


# --------------------------------------------------------------------------- public
def mmd2(X, Y, *, bandwidth="median", unbiased=True) -> float:
    """Squared maximum mean discrepancy between the samples ``X`` and ``Y``, Gaussian kernel.

    Parameters
    ----------
    X : array_like of shape (m, D)
    Y : array_like of shape (n, D)
        Finite real samples with the same width D; m, n >= 2 for the unbiased estimator, >= 1
        for the biased one.  Computed in float64.
    bandwidth : "median" or float
        The kernel width :math:`s` in :math:`k(x, y) = \\exp(-\\|x - y\\|^2 / (2 s^2))`
        ``[eq:mmd-gaussian-kernel]``.  ``"median"`` (default): the median of the Euclidean
        distances :math:`\\|z_i - z_j\\|` over all unordered pairs :math:`i < j` of distinct rows of
        the pooled sample :math:`Z = [X; Y]` (m + n rows; within X, within Y and across; the zero
        self-distances excluded; for an even number of pairs the mean of the two middle values,
        as ``np.median``) ``[eq:mmd-median]``.  A float must be > 0.
    unbiased : bool
        True (default): the U-statistic ``[eq:mmd-unbiased]``, unbiased for a fixed bandwidth, can
        be negative.  False: the V-statistic ``[eq:mmd-biased]``, >= 0, biased upwards.

    Returns
    -------
    float

    Notes
    -----
    The median heuristic makes the statistic invariant under a common translation, rotation or
    scaling of X and Y.  Cost: O((m + n)^2 D) time, O((m + n) D) memory plus ~8 MiB blocks.
    """
    X, Y = _check_samples(X, Y, unbiased)
    Z, sq = _pooled(X, Y)
    gamma = _gamma(bandwidth, Z, sq)
    m, n = X.shape[0], Y.shape[0]
    return float(_combine(*_kernel_sums(Z, sq, m, gamma), m, n, unbiased))


def _kernel_matrix(Z, sq, gamma):
    N = Z.shape[0]
    K = np.empty((N, N))
    rows = _rows_per_block(N)
    for s in range(0, N, rows):
        e = min(s + rows, N)
        _kernel_block(Z[s:e], sq[s:e], Z, sq, gamma, K[s:e])
    np.fill_diagonal(K, 1.0)  # k(z, z) = 1 exactly
    return K


def mmd_permutation_test(X, Y, n_permutations=1000, rng=None, *, bandwidth="median", unbiased=True):
    """Permutation test of :math:`P = Q` with the MMD statistic; returns ``(mmd2, p_value)``.

    Parameters
    ----------
    X, Y, bandwidth, unbiased
        As in :func:`mmd2`.  The median bandwidth is a function of the pooled sample, so it is
        computed once and is the same for every permutation.
    n_permutations : int
        Random relabellings of the pooled rows into groups of m and n.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    mmd2 : float
        The statistic of the observed split (equal to :func:`mmd2` up to rounding).
    p_value : float
        :math:`(1 + \\#\\{b : T_b \\ge T\\}) / (1 + B)` ``[eq:mmd-permutation-p]``, in (0, 1].

    Notes
    -----
    While (m + n)^2 <= 2^24 the pooled kernel matrix :math:`K` is formed once and every
    relabelling costs only :math:`a^\\top K a` for its 0/1 indicator :math:`a` of the X group,
    batched into GEMMs; beyond, each permutation recomputes the block sums of :func:`mmd2`.
    """
    X, Y = _check_samples(X, Y, unbiased)
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    gen = check_rng(rng)
    Z, sq = _pooled(X, Y)
    gamma = _gamma(bandwidth, Z, sq)
    m, n = X.shape[0], Y.shape[0]
    N = m + n
    perms = [gen.permutation(N) for _ in range(n_permutations)]
    if 8 * N * N <= _KERNEL_MATRIX_BYTES:
        K = _kernel_matrix(Z, sq, gamma)
        r = K.sum(axis=1)
        total = r.sum()
        labels = [np.arange(N), *perms]
        stats = np.empty(len(labels))
        for s in range(0, len(labels), _PERMUTATION_BATCH):
            batch = labels[s:s + _PERMUTATION_BATCH]
            A = np.zeros((N, len(batch)))
            for j, p in enumerate(batch):
                A[p[:m], j] = 1.0
            q = np.einsum("ij,ij->j", A, K @ A)  # a^T K a: the X-X sum, diagonal (m ones) included
            ar = r @ A  # a^T K 1
            stats[s:s + len(batch)] = _combine(q - m, total - 2.0 * ar + q - n, ar - q, m, n, unbiased)
        observed, permuted = stats[0], stats[1:]
    else:
        observed = _combine(*_kernel_sums(Z, sq, m, gamma), m, n, unbiased)
        permuted = np.array([_combine(*_kernel_sums(Z[p], sq[p], m, gamma), m, n, unbiased) for p in perms])
    p_value = (1.0 + np.count_nonzero(permuted >= observed)) / (1.0 + n_permutations)  # [eq:mmd-permutation-p]
    return float(observed), float(p_value)
