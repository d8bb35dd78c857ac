"""The biased sample covariance of a large data matrix without a centred copy ``[eq:ppca-sample-cov]``.

Used by :mod:`probgen.linear_latent.ppca` for the closed form and for EM; derivation and the
precision guard in ``docs/ppca.md``.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import get_blas_funcs

from .._validation import check_array

__all__ = ["sample_covariance"]

_BLOCK = 1024  # rows per block when centring block by block


def _symmetrize_upper(C: np.ndarray) -> np.ndarray:
    """Full symmetric matrix from the upper triangle of ``C`` (the lower one is ignored)."""
    U = np.triu(C)
    U += np.triu(C, 1).T
    return np.ascontiguousarray(U)


def _sample_covariance(X: np.ndarray, mean: np.ndarray, *, full: bool = True) -> np.ndarray:
    """Biased sample covariance ``S`` (D, D) of valid ``X`` (N, D) ``[eq:ppca-sample-cov]``.

    ``mean`` must be the column mean of ``X`` (the rank-1 correction below holds only for it).

    Fast path: one BLAS ``syrk`` on the raw data and a rank-1 ``syr`` update,
    ``S = X^T X / N - mean mean^T`` (no centred copy).  That correction cancels
    digits when a feature's offset dwarfs its spread, by the factor
    ``kappa_d = E[x_d^2] / S_dd``; when ``max_d kappa_d`` exceeds
    ``2^(mantissa bits / 4)`` (8192 in float64, ~54 in float32) the result is
    discarded and ``S`` is recomputed by centring block by block, which is exact
    to rounding.  With ``full=False`` only the upper triangle is valid (Fortran
    order, ready for LAPACK).
    """
    N, D = X.shape
    syrk, syr = get_blas_funcs(("syrk", "syr"), (X,))
    # X is C-ordered, so X.T is a Fortran-ordered (D, N) matrix A and syrk gives A A^T = X^T X.
    C = syrk(1.0 / N, X.T, trans=0, lower=0)
    raw = np.diag(C).copy()
    C = syr(-1.0, mean, a=C, lower=0, overwrite_a=1)
    var = np.diag(C)
    limit = 2.0 ** (np.finfo(X.dtype).nmant / 4.0)
    if not np.all(np.where(raw > 0, raw <= limit * np.where(var > 0, var, 0), True)):
        C = np.zeros((D, D), dtype=X.dtype, order="F")
        buf = np.empty((min(_BLOCK, N), D), dtype=X.dtype)
        for start in range(0, N, _BLOCK):
            block = buf[: min(_BLOCK, N - start)]
            np.subtract(X[start : start + _BLOCK], mean, out=block)
            C = syrk(1.0 / N, block.T, beta=1.0, c=C, trans=0, lower=0, overwrite_c=1)
    return _symmetrize_upper(C) if full else C


def _mean(X: np.ndarray) -> np.ndarray:
    """Column means, accumulated in float64 (a float32 running sum loses digits over many rows)."""
    if X.dtype == np.float64:
        return X.mean(axis=0)
    return X.mean(axis=0, dtype=np.float64).astype(X.dtype)


def sample_covariance(X) -> np.ndarray:
    """Biased (1/N) sample covariance without a centred copy of ``X`` ``[eq:ppca-sample-cov]``.

    Parameters
    ----------
    X : array_like of shape (N, D)
        Float32 input stays float32.

    Returns
    -------
    S : ndarray of shape (D, D)
        ``(1/N) sum_n (x_n - mean)(x_n - mean)^T`` about the sample mean, symmetric.
    """
    X = check_array(X, "X", dtype=None)
    return _sample_covariance(X, _mean(X))
