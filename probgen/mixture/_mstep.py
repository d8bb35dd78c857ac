"""The M-step of a Gaussian mixture as a pure function: weights, means and covariances from
responsibilities, all components at once, each covariance centred on its new mean."""
from __future__ import annotations

import numpy as np

from .._validation import check_array, check_nonnegative_float, check_option
from ..kernels.responsibilities import _weighted_diag_scatter
from ._params import COVARIANCE_TYPES

__all__ = ["m_step"]

_SCRATCH_ELEMENTS = 1 << 17  # ~1 MiB of float64 per scratch block: it stays in cache


def _full_scatter(X, resp, means):
    """``S_k = sum_n gamma_nk (x_n - mu_k)(x_n - mu_k)^T`` for all k, shape (K, D, D).

    Centred on the new means (never the naive ``sum gamma x x^T - N_k mu mu^T``, which loses every
    digit for data far from the origin).  Rows are taken in blocks: the differences of the block
    from all K means, ``D`` of shape (K, B, D), and their weighted copies ``W`` are formed at once,
    then ``S_k += W_k^T D_k`` is one BLAS product per component.  Memory is O(K B D) whatever N is.
    (One batched ``np.matmul`` over a transposed view would be neater, but NumPy runs it in a slow
    non-BLAS loop for larger D.)
    """
    N, D = X.shape
    K = means.shape[0]
    rows = max(64, _SCRATCH_ELEMENTS // max(1, K * D))
    diff = np.empty((K, min(rows, N), D), dtype=X.dtype)
    weighted = np.empty_like(diff)
    S = np.zeros((K, D, D), dtype=X.dtype)
    for start in range(0, N, rows):
        Xb = X[start:start + rows]
        B = Xb.shape[0]
        d, w = diff[:, :B], weighted[:, :B]
        np.subtract(Xb[None, :, :], means[:, None, :], out=d)  # x_n - mu_k
        np.multiply(d, resp[start:start + B].T[:, :, None], out=w)  # gamma_nk (x_n - mu_k)
        for k in range(K):
            S[k] += w[k].T @ d[k]  # [eq:gmm-mstep-cov]
    return 0.5 * (S + np.swapaxes(S, 1, 2))


def _add_to_diagonal(A, value):
    """``A + value I`` for a matrix or a stack of matrices (new array)."""
    A = A.copy()
    idx = np.arange(A.shape[-1])
    A[..., idx, idx] += value
    return A


def _m_step(X, resp, reg_covar, covariance_type):
    """Fast path of :func:`m_step`: valid input of one dtype, C-contiguous."""
    eps = 10 * np.finfo(resp.dtype).eps  # keeps an empty component's N_k away from 0
    nk = resp.sum(axis=0) + eps  # N_k = sum_n gamma_nk
    means = (resp.T @ X) / nk[:, None]  # [eq:gmm-mstep-means]
    if covariance_type == "full":
        covariances = _add_to_diagonal(_full_scatter(X, resp, means) / nk[:, None, None], reg_covar)
    elif covariance_type == "tied":
        covariances = _add_to_diagonal(_full_scatter(X, resp, means).sum(axis=0) / nk.sum(), reg_covar)
    else:
        variances = _weighted_diag_scatter(X, resp, means) / nk[:, None] + reg_covar
        covariances = variances if covariance_type == "diag" else variances.mean(axis=1)
    weights = nk / nk.sum()  # [eq:gmm-mstep-weights]
    return weights, means, covariances.astype(X.dtype, copy=False)


def m_step(X, resp, reg_covar=1e-6, covariance_type="full"):
    """Maximise the expected complete-data log-likelihood ``[eq:gmm-q]`` (of ``[eq:gmm-complete]``).

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Data, float32 or float64 (kept).
    resp : ndarray of shape (N, K)
        Responsibilities ``gamma_nk`` (rows non-negative; they normally sum to 1).
    reg_covar : float
        Non-negative value added to every variance (the diagonal of each covariance)
        ``[eq:gmm-reg-covar]``.
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    weights : ndarray of shape (K,)
        ``pi_k = N_k / N`` with ``N_k = sum_n gamma_nk`` ``[eq:gmm-mstep-weights]``.
    means : ndarray of shape (K, D)
        ``mu_k = sum_n gamma_nk x_n / N_k`` ``[eq:gmm-mstep-means]``.
    covariances : ndarray
        ``Sigma_k = sum_n gamma_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I``
        ``[eq:gmm-mstep-cov]``: (K, D, D) full; (D, D) tied (the N_k-weighted average of the
        Sigma_k); (K, D) diag (their diagonals); (K,) spherical (the mean of each diagonal).

    Notes
    -----
    As in scikit-learn, ``10 eps`` is added to each ``N_k`` so that a component with no
    responsibility gets finite parameters (mean 0, covariance ``reg_covar I``) instead of 0/0.
    """
    check_option(covariance_type, "covariance_type", COVARIANCE_TYPES)
    reg_covar = check_nonnegative_float(reg_covar, "reg_covar")
    X = check_array(X, "X", dtype=None)
    resp = check_array(resp, "resp", dtype=X.dtype)
    if resp.shape[0] != X.shape[0]:
        raise ValueError(f"resp must have one row per sample ({X.shape[0]}), got shape {resp.shape}")
    if resp.shape[1] < 1:
        raise ValueError(f"resp must have at least one column, got shape {resp.shape}")
    if np.any(resp < 0):
        raise ValueError("resp must be non-negative")
    return _m_step(X, resp, reg_covar, covariance_type)
