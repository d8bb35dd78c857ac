"""Parameter helpers of the Gaussian mixture: Cholesky factors of precisions, checks, counts.

Conventions follow scikit-learn so fitted attributes can be compared one to one:
``prec_chol`` is the *upper*-triangular ``U`` with ``U U^T = Sigma^{-1}`` (``"full"``: (K, D, D),
``"tied"``: (D, D)), and ``1/sigma`` for ``"diag"`` (K, D) and ``"spherical"`` (K,).
"""
from __future__ import annotations

import numpy as np

from .._validation import check_array

__all__ = [
    "COVARIANCE_TYPES",
    "precision_cholesky",
    "precision_cholesky_from_precisions",
    "precisions_from_cholesky",
    "n_parameters",
]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

_COLLAPSE_HINT = (
    "(a component sits on too few distinct points, or a feature is constant within it). "
    "Increase reg_covar, reduce n_components, or rescale the data"
)


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of ``covariances_``/``precisions_`` for a covariance type."""
    return {
        "full": (n_components, n_features, n_features),
        "tied": (n_features, n_features),
        "diag": (n_components, n_features),
        "spherical": (n_components,),
    }[covariance_type]


def _chol_lower(matrices, what: str, hint: str = _COLLAPSE_HINT):
    """Lower Cholesky factor of each SPD matrix in (..., D, D); ValueError naming the culprit."""
    try:
        return np.linalg.cholesky(matrices)
    except np.linalg.LinAlgError:
        stack = matrices.reshape((-1,) + matrices.shape[-2:])
        for k, m in enumerate(stack):
            try:
                np.linalg.cholesky(m)
            except np.linalg.LinAlgError:
                where = f" of component {k}" if matrices.ndim == 3 else ""
                raise ValueError(f"the {what}{where} is not positive definite {hint}") from None
        raise


def precision_cholesky(covariances, covariance_type: str):
    """Upper Cholesky factors of the precisions from covariances ``[eq:gmm-prec-chol]``.

    Parameters
    ----------
    covariances : ndarray
        (K, D, D) full, (D, D) tied, (K, D) diag or (K,) spherical.
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    prec_chol : ndarray, same shape as ``covariances``
        ``U = L^{-T}`` where ``Sigma = L L^T``, so ``U U^T = Sigma^{-1}`` and ``U`` is upper
        triangular; ``1/sqrt(sigma^2)`` for diag and spherical.

    Raises
    ------
    ValueError
        If a covariance is not positive definite (or not finite), with what to change.
    """
    covariances = np.asarray(covariances)
    if not np.all(np.isfinite(covariances)):
        raise ValueError(f"a covariance is not finite {_COLLAPSE_HINT}")
    if covariance_type in ("full", "tied"):
        chol = _chol_lower(covariances, "covariance")
        # L^{-1} is lower triangular; inv() leaves rounding noise above the diagonal, cut it off.
        # (NumPy's batched LAPACK only: SciPy's separate BLAS thread pool stalls next to NumPy's.)
        prec_chol = np.triu(np.swapaxes(np.linalg.inv(chol), -1, -2))
    else:
        if np.any(covariances <= 0):
            raise ValueError(f"a variance is not positive {_COLLAPSE_HINT}")
        prec_chol = 1.0 / np.sqrt(covariances)
    if not np.all(np.isfinite(prec_chol)):
        raise ValueError(f"a covariance is numerically singular {_COLLAPSE_HINT}")
    return prec_chol


def precision_cholesky_from_precisions(precisions, covariance_type: str):
    """Upper factors ``U`` with ``U U^T = Lambda`` straight from precisions ``Lambda``.

    With the exchange matrix ``J`` (ones on the anti-diagonal): if ``J Lambda J = L L^T`` (lower
    Cholesky) then ``U = J L J`` is upper triangular and ``U U^T = Lambda``.
    """
    precisions = np.asarray(precisions)
    if covariance_type in ("full", "tied"):
        flipped = precisions[..., ::-1, ::-1]
        return np.ascontiguousarray(_chol_lower(flipped, "precision")[..., ::-1, ::-1])
    return np.sqrt(precisions)


def precisions_from_cholesky(prec_chol, covariance_type: str):
    """``Lambda = U U^T`` (full, tied) or ``(1/sigma)^2`` (diag, spherical)."""
    prec_chol = np.asarray(prec_chol)
    if covariance_type in ("full", "tied"):
        return prec_chol @ np.swapaxes(prec_chol, -1, -2)
    return prec_chol**2


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free parameters: ``K - 1`` weights, ``K D`` means and the covariances ``[eq:gmm-bic]``."""
    K, D = n_components, n_features
    cov = {
        "full": K * D * (D + 1) // 2,
        "tied": D * (D + 1) // 2,
        "diag": K * D,
        "spherical": K,
    }[covariance_type]
    return int(cov + K * D + K - 1)


# ----------------------------------------------------------------------------- user initial values
def check_weights(weights, n_components: int, dtype):
    """Initial weights: shape (K,), in [0, 1], summing to 1."""
    w = check_array(weights, "weights_init", ndim=1, dtype=dtype)
    if w.shape != (n_components,):
        raise ValueError(f"weights_init must have shape ({n_components},), got {w.shape}")
    if np.any(w < 0) or np.any(w > 1):
        raise ValueError(f"weights_init must lie in [0, 1], got min {w.min():.5g}, max {w.max():.5g}")
    atol = 1e-6 if w.dtype == np.float32 else 1e-8
    if abs(1.0 - float(np.sum(w, dtype=np.float64))) > atol:
        raise ValueError(f"weights_init must sum to 1, got sum {float(np.sum(w)):.10g}")
    return w


def check_means(means, n_components: int, n_features: int, dtype):
    """Initial means: shape (K, D)."""
    m = check_array(means, "means_init", dtype=dtype)
    if m.shape != (n_components, n_features):
        raise ValueError(
            f"means_init must have shape ({n_components}, {n_features}), got {m.shape}"
        )
    return m


def check_precisions(precisions, covariance_type: str, n_components: int, n_features: int, dtype):
    """Initial precisions: the shape of ``covariance_type``, symmetric positive definite."""
    want = covariance_shape(covariance_type, n_components, n_features)
    p = check_array(precisions, "precisions_init", ndim=len(want), dtype=dtype)
    if p.shape != want:
        raise ValueError(
            f"precisions_init for covariance_type={covariance_type!r} must have shape {want}, "
            f"got {p.shape}"
        )
    if covariance_type in ("full", "tied"):
        if not np.allclose(p, np.swapaxes(p, -1, -2)):
            raise ValueError("precisions_init must be symmetric")
        _chol_lower(p, "precisions_init matrix", "(it must be symmetric positive definite)")
    elif np.any(p <= 0):
        raise ValueError(f"precisions_init for covariance_type={covariance_type!r} must be positive")
    return p
