"""The E-step of a Gaussian mixture as a pure function (the work is the fused Numba kernel)."""
from __future__ import annotations

import numpy as np

from ..kernels.responsibilities import (
    _check_mixture_params,
    _mixture_responsibilities,
    _raise_on_bad_rows,
)

__all__ = ["e_step", "log_weights"]


def log_weights(weights):
    """``log pi_k``; an empty component (weight 0) gets ``-inf``, never a warning."""
    with np.errstate(divide="ignore"):
        return np.log(weights)


def e_step(X, weights, means, prec_chol, covariance_type="full"):
    """Responsibilities of every component for every sample, in log space ``[eq:gmm-estep]``.

    Parameters
    ----------
    X : ndarray of shape (N, D)
        Data, float32 or float64 (kept).
    weights : ndarray of shape (K,)
        Mixing weights ``pi_k`` (non-negative, summing to 1).
    means : ndarray of shape (K, D)
    prec_chol : ndarray
        Upper Cholesky factors of the precisions (see :func:`precision_cholesky`): (K, D, D) full,
        (D, D) tied, (K, D) diag, (K,) spherical.
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    log_resp : ndarray of shape (N, K)
        ``log gamma_nk = log pi_k + log N(x_n | mu_k, Sigma_k) - log p(x_n)``.
    log_norm : ndarray of shape (N,)
        ``log p(x_n) = log sum_k pi_k N(x_n | mu_k, Sigma_k)`` ``[eq:gmm-loglik]``; its mean is
        the quantity EM increases.

    Notes
    -----
    ``gamma_nk = pi_k N(x_n | mu_k, Sigma_k) / sum_j pi_j N(x_n | mu_j, Sigma_j)``
    ``[eq:gmm-estep]``, computed with a max-shifted log-sum-exp by one fused, row-parallel
    Numba pass (:func:`probgen.kernels.mixture_responsibilities`).

    Raises
    ------
    ValueError
        On malformed input, or when a sample has probability 0 under every component.
    """
    X, weights, means, prec_chol = _check_mixture_params(
        X, weights, means, prec_chol, covariance_type, weights_are_log=False
    )
    if np.any(weights < 0) or abs(float(np.sum(weights, dtype=np.float64)) - 1.0) > 1e-5:
        raise ValueError(f"weights must be non-negative and sum to 1, got {weights}")
    log_resp = np.empty((X.shape[0], means.shape[0]), dtype=X.dtype)
    log_norm = np.empty(X.shape[0], dtype=X.dtype)
    _mixture_responsibilities(
        X, log_weights(weights), means, prec_chol, covariance_type, True, log_resp, log_norm
    )
    _raise_on_bad_rows(log_norm, "X")
    return log_resp, log_norm


def _e_step_into(X, weights, means, prec_chol, covariance_type, resp, log_norm) -> float:
    """Fit-loop E-step: valid input; writes responsibilities (not logs) into ``resp`` (N, K)
    and ``log p(x_n)`` into ``log_norm`` (N,); returns the mean log-likelihood ``[eq:gmm-loglik]``."""
    _mixture_responsibilities(
        X, log_weights(weights), means, prec_chol, covariance_type, False, resp, log_norm
    )
    ll = float(np.mean(log_norm, dtype=np.float64))
    if not np.isfinite(ll):
        _raise_on_bad_rows(log_norm, "X")
        raise ValueError(f"the mean log-likelihood is {ll}; rescale the data")
    return ll
