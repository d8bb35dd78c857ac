"""Responsibilities of a Gaussian mixture: Numba kernels beside their NumPy ``*_reference`` twins.

Three kernels, each a single pass over the data, parallel over blocks of rows:

* :func:`normalize_log_prob` -- given log-joint scores ``log_prob[n, k]``, the log-sum-exp
  ``log_norm[n]`` and the normalised responsibilities ``exp(log_prob - log_norm)``
  ``[eq:gmm-estep]``.
* :func:`mixture_responsibilities` -- the fused E-step: for every row the Gaussian log-density of
  each component from the Cholesky factor of its precision ``[eq:gauss-logpdf]``, plus the log
  weight, then the same normalisation ``[eq:gmm-estep]``.  Memory O(N K); the (N, K, D)
  differences are never formed.
* :func:`weighted_diag_scatter` -- the responsibility-weighted squared deviations that the
  diagonal and spherical M-steps need ``[eq:gmm-mstep-cov]``, centred on the new means.

The exponentials are computed by :func:`_exp_nonpositive`, a branch-free exp that LLVM vectorises
(twin: ``np.exp``, within 1 ulp).  The ``*_reference`` functions are the plain-NumPy definitions;
tests compare the kernels with them.
The public wrappers check their input; the ``_`` kernels assume valid, C-contiguous input of one
floating dtype.  Block sizes are fixed, so results do not depend on the number of threads.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._validation import check_array, check_option

__all__ = [
    "normalize_log_prob",
    "normalize_log_prob_reference",
    "mixture_responsibilities",
    "mixture_responsibilities_reference",
    "mixture_log_prob_reference",
    "weighted_diag_scatter",
    "weighted_diag_scatter_reference",
]

_ROWS = 256  # rows per block in the E-step kernels (the block is transposed: rows are SIMD lanes)
_SCATTER_ROWS = 4096  # rows per partial sum in the scatter kernel
_LOG_2PI = math.log(2.0 * math.pi)
_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


# ----------------------------------------------------------------------------- exp and log-sum-exp
# exp(x) for x <= 0 in plain arithmetic, so that LLVM vectorises it (Numba's np.exp is a scalar libm
# call, ~3x slower here): x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), e^r by its
# Taylor polynomial to degree 13 (truncation < 5e-18), 2^n written straight into the exponent bits.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2**52: x + _SHIFT rounds x to an integer kept in the low bits
_SHIFT_BITS = np.array(_SHIFT).view(np.int64).item()
_MIN_EXP_ARG = -708.0  # exp(x) < 3.3e-308 below this; returned as 0
_INV_FACT = tuple(1.0 / math.factorial(i) for i in range(14))


@njit(cache=True, error_model="numpy", fastmath=False)
def _exp_nonpositive(x, scratch):
    """``x[i] <- exp(x[i])`` in place for ``x <= 0`` (-inf and x < -708 give 0); float64, 1-D.

    Within 1 ulp of ``np.exp`` on [-708, 0] (tested).  ``scratch``: float64, at least as long.
    """
    M = x.shape[0]
    bits = scratch.view(np.int64)
    for i in range(M):
        xc = max(x[i], _MIN_EXP_ARG)
        scratch[i] = xc * _LOG2E + _SHIFT
    for i in range(M):
        bits[i] = (bits[i] - _SHIFT_BITS + 1023) << 52  # the float 2^n
    for i in range(M):
        xi = x[i]
        xc = max(xi, _MIN_EXP_ARG)
        n = (xc * _LOG2E + _SHIFT) - _SHIFT
        r = (xc - n * _LN2_HI) - n * _LN2_LO
        p = _INV_FACT[13]
        for j in range(12, -1, -1):  # Horner, unrolled by LLVM
            p = p * r + _INV_FACT[j]
        x[i] = p * scratch[i] if xi >= _MIN_EXP_ARG else 0.0


@njit(cache=True, error_model="numpy", fastmath=False)
def _normalize_rows(src, dst, log_norm, start, stop, want_log, ex, scratch):
    """Normalise rows ``start:stop`` of log-scores ``src`` (N, K) into ``dst`` in log space
    ``[eq:gmm-estep]``, writing their log-sum-exps ``[eq:logsumexp]`` into ``log_norm``.

    ``dst`` may be ``src``.  ``ex``/``scratch``: float64 work arrays of (stop - start) K elements.
    A row of -inf gives -inf (responsibilities 0, log-responsibilities -inf); a NaN or +inf
    anywhere in a row gives a NaN log-sum-exp, which the public wrappers turn into errors.
    """
    K = src.shape[1]
    B = stop - start
    for t in range(B):
        n = start + t
        mx = -np.inf
        check = 0.0  # NaN if the row holds NaN or both infinities, +inf if it holds +inf
        for k in range(K):
            v = src[n, k]
            check += v
            if v > mx:
                mx = v
        if mx == -np.inf:
            mx = 0.0  # all -inf: exponents -inf, sum 0, log-sum-exp -inf
        for k in range(K):
            x = src[n, k] - mx
            dst[n, k] = x
            ex[t * K + k] = x
        log_norm[n] = mx if check < np.inf else np.nan
    _exp_nonpositive(ex[:B * K], scratch)
    for t in range(B):
        n = start + t
        s = 0.0
        for k in range(K):
            s += ex[t * K + k]
        shift = log_norm[n]
        if not (s > 0.0 and shift == shift):
            for k in range(K):
                dst[n, k] = np.nan if shift != shift else (-np.inf if want_log else 0.0)
            log_norm[n] = shift if shift != shift else -np.inf
            continue
        log_s = np.log(s)
        log_norm[n] = shift + log_s
        if want_log:
            for k in range(K):
                dst[n, k] = dst[n, k] - log_s
        else:
            inv = 1.0 / s
            for k in range(K):
                dst[n, k] = ex[t * K + k] * inv


@njit(parallel=True, cache=True, error_model="numpy", fastmath=False)
def _normalize_kernel(log_prob, want_log, out, log_norm):
    N, K = log_prob.shape
    n_blocks = (N + _ROWS - 1) // _ROWS
    for blk in prange(n_blocks):
        start = blk * _ROWS
        stop = min(N, start + _ROWS)
        ex = np.empty((stop - start) * K)
        scratch = np.empty((stop - start) * K)
        _normalize_rows(log_prob, out, log_norm, start, stop, want_log, ex, scratch)


def _raise_on_bad_rows(log_norm, what: str) -> None:
    """Turn the kernels' non-finite log-sum-exps into errors that say what to change."""
    bad = ~np.isfinite(log_norm)
    if not bad.any():
        return
    rows = np.flatnonzero(bad)
    if np.isnan(log_norm[rows]).any():
        raise ValueError(f"{what} contains NaN or +inf in row(s) {rows[:5].tolist()}")
    raise ValueError(
        f"{what}: row(s) {rows[:5].tolist()} have probability 0 under every component (log-sum-exp "
        "is -inf), so their responsibilities are undefined; rescale the data or check the parameters"
    )


def normalize_log_prob(log_prob, *, log: bool = False):
    """Row-wise log-sum-exp normalisation of log-scores ``[eq:gmm-estep]``.

    Parameters
    ----------
    log_prob : ndarray of shape (N, K)
        Log-joint scores, e.g. ``log pi_k + log N(x_n | mu_k, Sigma_k)``; float32 or float64
        (kept).  ``-inf`` entries are allowed (zero probability), NaN and ``+inf`` are not.
    log : bool
        Return log-responsibilities instead of responsibilities.

    Returns
    -------
    resp : ndarray of shape (N, K)
        ``exp(log_prob - log_norm[:, None])`` (or its log); rows sum to 1.
    log_norm : ndarray of shape (N,)
        ``log sum_k exp(log_prob[n, k])``.

    Notes
    -----
    Max-shift per row, one pass, parallel over rows:
    ``log_norm = m + log sum_k exp(log_prob_k - m)`` with ``m = max_k log_prob_k``.
    """
    log_prob = check_array(log_prob, "log_prob", dtype=None, allow_nonfinite=True)
    if log_prob.shape[1] == 0:
        raise ValueError(f"log_prob must have at least one column, got shape {log_prob.shape}")
    out = np.empty_like(log_prob)
    log_norm = np.empty(log_prob.shape[0], dtype=log_prob.dtype)
    _normalize_kernel(log_prob, bool(log), out, log_norm)
    _raise_on_bad_rows(log_norm, "log_prob")
    return out, log_norm


def normalize_log_prob_reference(log_prob, *, log: bool = False):
    """Plain-NumPy twin of :func:`normalize_log_prob` (same meaning, no checks)."""
    log_prob = np.asarray(log_prob)
    mx = log_prob.max(axis=1, keepdims=True)
    log_norm = mx[:, 0] + np.log(np.exp(log_prob - mx).sum(axis=1))
    log_resp = log_prob - log_norm[:, None]
    return (log_resp if log else np.exp(log_resp)), log_norm


# ----------------------------------------------------------------------------- fused E-step
@njit(parallel=True, cache=True, error_model="numpy", fastmath=False)
def _estep_chol_kernel(X, means, prec_chol, log_const, want_log, out, log_norm):
    """Full/tied E-step.  ``prec_chol[k]`` is upper triangular with ``U U^T = Sigma_k^{-1}``.

    ``log N(x | mu_k, Sigma_k) = log|U_k| - D/2 log 2 pi - 1/2 |(x - mu_k)^T U_k|^2``
    ``[eq:gauss-logpdf]``; ``log_const[k] = log pi_k + log|U_k| - D/2 log 2 pi``.
    """
    N, D = X.shape
    K = means.shape[0]
    n_blocks = (N + _ROWS - 1) // _ROWS
    for blk in prange(n_blocks):
        start = blk * _ROWS
        B = min(N, start + _ROWS) - start
        xT = np.empty((D, B), X.dtype)  # the block, transposed: inner loops run over rows
        dT = np.empty((D, B), X.dtype)
        ex = np.empty(B * K)
        scratch = np.empty(B * K)
        y = np.empty(B, X.dtype)
        sq = np.empty(B, X.dtype)
        for t in range(B):
            for i in range(D):
                xT[i, t] = X[start + t, i]
        for k in range(K):
            for i in range(D):
                m = means[k, i]
                for t in range(B):
                    dT[i, t] = xT[i, t] - m
            for t in range(B):
                sq[t] = 0.0
            for j in range(D):  # y_j = sum_{i <= j} (x - mu)_i U_ij, the Mahalanobis coordinates
                for t in range(B):
                    y[t] = 0.0
                for i in range(j + 1):
                    u = prec_chol[k, i, j]
                    for t in range(B):
                        y[t] += dT[i, t] * u
                for t in range(B):
                    sq[t] += y[t] * y[t]
            for t in range(B):
                out[start + t, k] = log_const[k] - 0.5 * sq[t]  # [eq:gauss-logpdf] + log pi_k
        _normalize_rows(out, out, log_norm, start, start + B, want_log, ex, scratch)


@njit(parallel=True, cache=True, error_model="numpy", fastmath=False)
def _estep_diag_kernel(X, means, prec_chol, log_const, want_log, out, log_norm):
    """Diagonal/spherical E-step; ``prec_chol[k, i] = 1 / sigma_ki`` ``[eq:gauss-logpdf]``."""
    N, D = X.shape
    K = means.shape[0]
    n_blocks = (N + _ROWS - 1) // _ROWS
    for blk in prange(n_blocks):
        start = blk * _ROWS
        B = min(N, start + _ROWS) - start
        xT = np.empty((D, B), X.dtype)
        sq = np.empty(B, X.dtype)
        ex = np.empty(B * K)
        scratch = np.empty(B * K)
        for t in range(B):
            for i in range(D):
                xT[i, t] = X[start + t, i]
        for k in range(K):
            for t in range(B):
                sq[t] = 0.0
            for i in range(D):
                m = means[k, i]
                p = prec_chol[k, i]
                for t in range(B):
                    z = (xT[i, t] - m) * p
                    sq[t] += z * z
            for t in range(B):
                out[start + t, k] = log_const[k] - 0.5 * sq[t]
        _normalize_rows(out, out, log_norm, start, start + B, want_log, ex, scratch)


def _log_det_prec_chol(prec_chol, covariance_type, n_features):
    """``log|U_k|`` = half the log-determinant of the precision, per component."""
    if covariance_type == "full":
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return np.log(np.diagonal(prec_chol)).sum()
    if covariance_type == "diag":
        return np.log(prec_chol).sum(axis=1)
    return n_features * np.log(prec_chol)


def _mixture_responsibilities(X, log_weights, means, prec_chol, covariance_type, want_log, out, log_norm):
    """Fast path of :func:`mixture_responsibilities`: valid, matching-dtype, C-contiguous input.

    Writes into ``out`` (N, K) and ``log_norm`` (N,).
    """
    K, D = means.shape
    dt = X.dtype
    log_const = (
        log_weights + _log_det_prec_chol(prec_chol, covariance_type, D) - 0.5 * D * _LOG_2PI
    ).astype(dt)
    log_const = np.broadcast_to(log_const, (K,)).copy()
    if covariance_type in ("full", "tied"):
        pc = np.ascontiguousarray(np.broadcast_to(prec_chol, (K, D, D)), dtype=dt)
        _estep_chol_kernel(X, means, pc, log_const, want_log, out, log_norm)
    else:
        pc = prec_chol[:, None] if covariance_type == "spherical" else prec_chol
        pc = np.ascontiguousarray(np.broadcast_to(pc, (K, D)), dtype=dt)
        _estep_diag_kernel(X, means, pc, log_const, want_log, out, log_norm)
    return out, log_norm


_PREC_SHAPES = {
    "full": lambda K, D: (K, D, D),
    "tied": lambda K, D: (D, D),
    "diag": lambda K, D: (K, D),
    "spherical": lambda K, D: (K,),
}


def _check_mixture_params(X, log_weights, means, prec_chol, covariance_type, *, weights_are_log):
    """Shared checks of the E-step arguments; returns them as arrays of X's dtype."""
    check_option(covariance_type, "covariance_type", _COVARIANCE_TYPES)
    X = check_array(X, "X", dtype=None)
    dt = X.dtype
    means = check_array(means, "means", dtype=dt)
    K, D = means.shape
    if X.shape[1] != D:
        raise ValueError(f"X must have {D} features like means (shape {means.shape}), got shape {X.shape}")
    wname = "log_weights" if weights_are_log else "weights"
    w = check_array(log_weights, wname, ndim=1, dtype=dt, allow_nonfinite=weights_are_log)
    if w.shape != (K,):
        raise ValueError(f"{wname} must have shape ({K},) to match means, got {w.shape}")
    if weights_are_log and (np.isnan(w).any() or np.isposinf(w).any()):
        raise ValueError("log_weights must not contain NaN or +inf")
    want = _PREC_SHAPES[covariance_type](K, D)
    prec_chol = check_array(prec_chol, "prec_chol", ndim=len(want), dtype=dt)
    if prec_chol.shape != want:
        raise ValueError(
            f"prec_chol for covariance_type={covariance_type!r} must have shape {want}, "
            f"got {prec_chol.shape}"
        )
    if covariance_type in ("full", "tied"):
        diag = np.diagonal(prec_chol, axis1=-2, axis2=-1)
        size = np.abs(prec_chol).max(axis=(-2, -1), keepdims=True)
        if np.any(np.abs(np.tril(prec_chol, -1)) > 1e-10 * size) or np.any(diag <= 0):
            raise ValueError(
                "prec_chol must be upper triangular with a positive diagonal "
                "(U with U @ U.T = precision, as precisions_cholesky_)"
            )
    elif np.any(prec_chol <= 0):
        raise ValueError(f"prec_chol for covariance_type={covariance_type!r} must be positive")
    return X, w, means, prec_chol


def mixture_responsibilities(X, log_weights, means, prec_chol, covariance_type="full", *, log=False):
    """Fused Gaussian-mixture E-step: log-densities, log-sum-exp and responsibilities in one pass.

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Data, float32 or float64 (kept; the parameters are cast to it).
    log_weights : ndarray of shape (K,)
        ``log pi_k`` (``-inf`` allowed for an empty component).
    means : ndarray of shape (K, D)
    prec_chol : ndarray
        Upper-triangular Cholesky factors ``U_k`` of the precisions, ``U_k U_k^T = Sigma_k^{-1}``
        (scikit-learn's ``precisions_cholesky_``; entries below the diagonal must be zero up to
        rounding and are not read): shape (K, D, D) for ``"full"``, (D, D) for
        ``"tied"``, (K, D) for ``"diag"`` (``1/sigma``) and (K,) for ``"spherical"``.
    covariance_type : {"full", "tied", "diag", "spherical"}
    log : bool
        Return log-responsibilities instead of responsibilities.

    Returns
    -------
    resp : ndarray of shape (N, K)
        ``gamma_nk`` ``[eq:gmm-estep]`` (or ``log gamma_nk``).
    log_norm : ndarray of shape (N,)
        ``log p(x_n) = log sum_k pi_k N(x_n | mu_k, Sigma_k)`` ``[eq:gmm-loglik]``.

    Notes
    -----
    ``log N(x | mu, Sigma) = log|U| - D/2 log 2 pi - 1/2 |U^T (x - mu)|^2`` ``[eq:gauss-logpdf]``;
    the kernel computes it for every (n, k) without storing (N, K, D) differences.
    """
    X, log_weights, means, prec_chol = _check_mixture_params(
        X, log_weights, means, prec_chol, covariance_type, weights_are_log=True
    )
    out = np.empty((X.shape[0], means.shape[0]), dtype=X.dtype)
    log_norm = np.empty(X.shape[0], dtype=X.dtype)
    _mixture_responsibilities(X, log_weights, means, prec_chol, covariance_type, bool(log), out, log_norm)
    _raise_on_bad_rows(log_norm, "X")
    return out, log_norm


def mixture_log_prob_reference(X, means, prec_chol, covariance_type="full"):
    """``log N(x_n | mu_k, Sigma_k)`` of shape (N, K) in plain NumPy ``[eq:gauss-logpdf]``."""
    X = np.asarray(X)
    means = np.asarray(means)
    K, D = means.shape
    pc = np.asarray(prec_chol)
    if covariance_type == "tied":
        pc = np.broadcast_to(pc, (K, D, D))
    elif covariance_type == "diag":
        pc = np.stack([np.diag(p) for p in pc])
    elif covariance_type == "spherical":
        pc = pc[:, None, None] * np.eye(D)
    log_det = np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1)
    log_prob = np.empty((X.shape[0], K), dtype=np.result_type(X, pc))
    for k in range(K):
        y = (X - means[k]) @ pc[k]
        log_prob[:, k] = log_det[k] - 0.5 * D * _LOG_2PI - 0.5 * np.sum(y * y, axis=1)
    return log_prob


def mixture_responsibilities_reference(X, log_weights, means, prec_chol, covariance_type="full", *, log=False):
    """Plain-NumPy twin of :func:`mixture_responsibilities` (same meaning, no checks)."""
    weighted = mixture_log_prob_reference(X, means, prec_chol, covariance_type) + np.asarray(log_weights)
    return normalize_log_prob_reference(weighted, log=log)


# ----------------------------------------------------------------------------- M-step scatter
@njit(parallel=True, cache=True, error_model="numpy", fastmath=False)
def _diag_scatter_kernel(X, resp, means, partial):
    N, D = X.shape
    K = means.shape[0]
    n_blocks = partial.shape[0]
    for blk in prange(n_blocks):
        acc = np.zeros((K, D))  # float64 partial sums, whatever the data dtype
        for n in range(blk * _SCATTER_ROWS, min(N, (blk + 1) * _SCATTER_ROWS)):
            for k in range(K):
                r = resp[n, k]
                for i in range(D):
                    u = X[n, i] - means[k, i]
                    acc[k, i] += r * (u * u)
        partial[blk] = acc


def _weighted_diag_scatter(X, resp, means):
    """Fast path of :func:`weighted_diag_scatter` (valid, C-contiguous, one dtype)."""
    n_blocks = (X.shape[0] + _SCATTER_ROWS - 1) // _SCATTER_ROWS
    partial = np.empty((n_blocks, means.shape[0], X.shape[1]))
    _diag_scatter_kernel(X, resp, means, partial)
    return partial.sum(axis=0).astype(X.dtype, copy=False)


def weighted_diag_scatter(X, resp, means):
    """``S[k, i] = sum_n resp[n, k] (X[n, i] - means[k, i])^2``, centred on ``means``.

    Parameters
    ----------
    X : ndarray of shape (N, D)
    resp : ndarray of shape (N, K)
    means : ndarray of shape (K, D)

    Returns
    -------
    ndarray of shape (K, D)
        The diagonal of the responsibility-weighted scatter ``[eq:gmm-mstep-cov]``, accumulated in
        float64 and returned in X's dtype.
    """
    X = check_array(X, "X", dtype=None)
    resp = check_array(resp, "resp", dtype=X.dtype)
    if resp.shape[0] != X.shape[0]:
        raise ValueError(f"resp must have {X.shape[0]} rows like X, got shape {resp.shape}")
    means = check_array(means, "means", dtype=X.dtype, n_features=X.shape[1])
    if means.shape[0] != resp.shape[1]:
        raise ValueError(f"means must have {resp.shape[1]} rows (one per column of resp), got {means.shape}")
    return _weighted_diag_scatter(X, resp, means)


def weighted_diag_scatter_reference(X, resp, means):
    """Plain-NumPy twin of :func:`weighted_diag_scatter`."""
    X, resp, means = np.asarray(X), np.asarray(resp), np.asarray(means)
    return np.einsum("nk,nki->ki", resp, (X[:, None, :] - means[None]) ** 2)
