"""Private helpers shared by the Gaussian densities and the Gaussian KLs.

Everything here assumes its arguments were already validated by a public
function (converted to float arrays of the right ndim).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

_LOG_2PI = float(np.log(2.0 * np.pi))


def _float_dtype(*arrays) -> np.dtype:
    """float32 when every input is float32, float64 otherwise."""
    if arrays and all(np.asarray(a).dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _check_symmetric(cov: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if ``cov`` (..., D, D) is not symmetric to rounding."""
    if cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name} must be square in its last two axes, got shape {cov.shape}")
    tol = np.sqrt(np.finfo(cov.dtype).eps)
    scale = np.max(np.abs(cov), axis=(-2, -1), keepdims=True)
    asym = np.abs(cov - np.swapaxes(cov, -1, -2))
    if np.any(asym > tol * scale):
        worst = float(np.max(asym / np.where(scale > 0, scale, 1.0)))
        raise ValueError(
            f"{name} must be symmetric positive definite, but it is not symmetric "
            f"(largest |{name} - {name}.T| relative to max|{name}| is {worst:.3g})"
        )


def _cholesky(cov: np.ndarray, name: str) -> np.ndarray:
    """Lower Cholesky factor of one SPD matrix (D, D), with a clear error naming ``name``.

    Uses ``scipy.linalg.cho_factor``; the strictly upper triangle of the
    returned factor is zeroed so it can be used as a plain matrix.
    """
    _check_symmetric(cov, name)
    try:
        c, _ = scipy.linalg.cho_factor(cov, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{name} must be symmetric positive definite, but its Cholesky factorisation "
            f"failed (smallest eigenvalue {float(np.linalg.eigvalsh(cov)[0]):.3g}); "
            "add a regulariser such as reg_covar * I"
        ) from None
    return np.tril(c)


def _cholesky_batched(cov: np.ndarray, name: str) -> np.ndarray:
    """Lower Cholesky factors of a stack of SPD matrices (B, D, D)."""
    _check_symmetric(cov, name)
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        eig = np.linalg.eigvalsh(cov)[:, 0]
        bad = int(np.argmin(eig))
        where = f" (batch index {bad} of {cov.shape[0]})" if cov.shape[0] > 1 else ""
        raise ValueError(
            f"{name} must be symmetric positive definite, but its Cholesky factorisation "
            f"failed{where}; smallest eigenvalue {float(eig[bad]):.3g}"
        ) from None


def _log_det_from_chol(L: np.ndarray) -> np.ndarray:
    """log|Sigma| = 2 sum_i log L_ii for Sigma = L L^T  [eq:gauss-chol-logdet]."""
    return 2.0 * np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
