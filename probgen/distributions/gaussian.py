"""The multivariate Gaussian: log-density (full and diagonal covariance) and its MLE.

Derivations: ``docs/gaussian.md``.  Log-determinants and Mahalanobis
distances come from a Cholesky factor, never from an explicit inverse.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .._validation import check_array, check_nonnegative_float
from ._linalg import _LOG_2PI, _cholesky, _float_dtype, _log_det_from_chol

__all__ = ["gaussian_log_prob", "gaussian_log_prob_diag", "fit_gaussian"]


def _check_X_mean(X, mean):
    X = check_array(X, "X", ndim=2, dtype=None)
    D = X.shape[1]
    if D == 0:
        raise ValueError(f"X must have at least one feature, got shape {X.shape}")
    mean = check_array(mean, "mean", ndim=1, dtype=None, min_rows=0)
    if mean.shape != (D,):
        raise ValueError(f"mean must have shape ({D},) to match X of shape {X.shape}, got {mean.shape}")
    return X, mean, D


def gaussian_log_prob(X, mean, cov) -> np.ndarray:
    """Log-density of each row of ``X`` under N(mean, cov), full covariance.

    Parameters
    ----------
    X : array_like of shape (N, D)
        Points, one per row.
    mean : array_like of shape (D,)
        Mean :math:`\\mu`.
    cov : array_like of shape (D, D)
        Covariance :math:`\\Sigma`, symmetric positive definite.

    Returns
    -------
    log_prob : ndarray of shape (N,)
        :math:`\\log \\mathcal N(x_n \\mid \\mu, \\Sigma)` in nats; float32 only when
        every input is float32.

    Raises
    ------
    ValueError
        On NaN/inf, wrong shapes, or a ``cov`` that is not symmetric positive definite.

    Notes
    -----
    With :math:`\\Sigma = LL^\\top` and :math:`z_n = L^{-1}(x_n-\\mu)`
    ``[eq:gauss-logpdf]``, ``[eq:gauss-chol-logdet]``, ``[eq:gauss-chol-maha]``:

    .. math:: \\log \\mathcal N(x_n \\mid \\mu,\\Sigma) = -\\tfrac12\\big(D\\log 2\\pi
              + 2\\textstyle\\sum_i \\log L_{ii} + \\lVert z_n\\rVert^2\\big)
    """
    X, mean, D = _check_X_mean(X, mean)
    cov = check_array(cov, "cov", ndim=2, dtype=None)
    if cov.shape != (D, D):
        raise ValueError(f"cov must have shape ({D}, {D}) to match X of shape {X.shape}, got {cov.shape}")
    dtype = _float_dtype(X, mean, cov)
    X, mean, cov = (a.astype(dtype, copy=False) for a in (X, mean, cov))
    L = _cholesky(cov, "cov")
    # z = L^{-1} (x - mu): one triangular solve for all N columns  [eq:gauss-chol-maha]
    Z = scipy.linalg.solve_triangular(L, (X - mean).T, lower=True, check_finite=False)
    maha = np.einsum("dn,dn->n", Z, Z)
    log_det = _log_det_from_chol(L)  # [eq:gauss-chol-logdet]
    return (-0.5 * (D * _LOG_2PI + log_det + maha)).astype(dtype, copy=False)  # [eq:gauss-logpdf]


def gaussian_log_prob_diag(X, mean, var) -> np.ndarray:
    """Log-density of each row of ``X`` under N(mean, diag(var)).

    Parameters
    ----------
    X : array_like of shape (N, D)
    mean : array_like of shape (D,)
    var : array_like of shape (D,)
        Per-dimension variances :math:`\\sigma_d^2 > 0` (variances, not standard
        deviations nor log-variances).

    Returns
    -------
    log_prob : ndarray of shape (N,)

    Notes
    -----
    ``[eq:gauss-diag-logpdf]``:
    :math:`-\\tfrac12\\sum_d \\big(\\log 2\\pi + \\log\\sigma_d^2 + (x_{nd}-\\mu_d)^2/\\sigma_d^2\\big)`.
    """
    X, mean, D = _check_X_mean(X, mean)
    var = check_array(var, "var", ndim=1, dtype=None, min_rows=0)
    if var.shape != (D,):
        raise ValueError(f"var must have shape ({D},) to match X of shape {X.shape}, got {var.shape}")
    if np.any(var <= 0):
        raise ValueError(f"var must be > 0 everywhere, got minimum {float(var.min()):.3g}")
    dtype = _float_dtype(X, mean, var)
    X, mean, var = (a.astype(dtype, copy=False) for a in (X, mean, var))
    maha = ((X - mean) ** 2) @ (1.0 / var)
    log_det = np.sum(np.log(var))
    return (-0.5 * (D * _LOG_2PI + log_det + maha)).astype(dtype, copy=False)  # [eq:gauss-diag-logpdf]


def fit_gaussian(X, *, reg_covar: float = 0.0):
    """Closed-form maximum-likelihood Gaussian: sample mean and biased covariance.

    Parameters
    ----------
    X : array_like of shape (N, D)
        Data, one point per row; N >= 1.
    reg_covar : float, default 0.0
        Non-negative value added to the diagonal of the covariance (explicit
        regularisation, e.g. for constant features).  0 gives the exact MLE.

    Returns
    -------
    mean : ndarray of shape (D,)
        :math:`\\hat\\mu = \\frac1N\\sum_n x_n`  ``[eq:gauss-mle-mean]``.
    cov : ndarray of shape (D, D)
        :math:`\\hat\\Sigma = \\frac1N\\sum_n (x_n-\\hat\\mu)(x_n-\\hat\\mu)^\\top`
        ``[eq:gauss-mle-cov]`` (divides by N, not N-1), plus ``reg_covar * I``.

    Notes
    -----
    The covariance is computed from centred data with the corrected two-pass
    formula ``[eq:gauss-mle-centred]``, never as :math:`E[xx^\\top]-\\hat\\mu\\hat\\mu^\\top`,
    which loses every significant digit when the data sit far from the origin
    (e.g. :math:`10^8` + unit noise).  The mean is accumulated in float64;
    float32 input gives float32 output.
    """
    X = check_array(X, "X", ndim=2, dtype=None)
    reg_covar = check_nonnegative_float(reg_covar, "reg_covar")
    N, D = X.shape
    if D == 0:
        raise ValueError(f"X must have at least one feature, got shape {X.shape}")
    dtype = X.dtype
    mean = X.mean(axis=0, dtype=np.float64).astype(dtype)  # [eq:gauss-mle-mean]
    Xc = X - mean
    # corrected two-pass: remove the rounding residue of the first pass  [eq:gauss-mle-centred]
    resid = Xc.mean(axis=0, dtype=np.float64).astype(dtype)
    cov = (Xc.T @ Xc) / dtype.type(N) - np.outer(resid, resid)  # [eq:gauss-mle-cov]
    cov = 0.5 * (cov + cov.T)
    mean = mean + resid
    if reg_covar:
        cov[np.diag_indices(D)] += dtype.type(reg_covar)
    return mean.astype(dtype, copy=False), cov.astype(dtype, copy=False)
