"""Probabilistic PCA (Tipping & Bishop, 1999): closed form and EM.

The model ``z ~ N(0, I_M)``, ``x | z ~ N(W z + mu, sigma^2 I_D)`` ``[eq:ppca-model]``
has the Gaussian marginal ``N(mu, C)`` with ``C = W W^T + sigma^2 I``
``[eq:ppca-marginal]``.  Everything here works with the ``M x M`` matrix
``Mmat = W^T W + sigma^2 I`` instead of the ``D x D`` covariance ``C``: its
Cholesky factor gives ``log|C|`` by the matrix-determinant lemma
``[eq:ppca-det-lemma]`` and ``C^{-1}`` by the Woodbury identity
``[eq:ppca-woodbury]``, so a log-likelihood costs O(N D M + D M^2).

Derivations: ``docs/ppca.md``.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.linalg import cho_solve, cholesky, eigh, solve_triangular, svd

from .._validation import (
    check_array,
    check_is_fitted,
    check_nonnegative_float,
    check_option,
    check_positive_float,
    check_positive_int,
    check_rng,
)
from ..em import run_em
from ._scatter import _mean, _sample_covariance, sample_covariance

__all__ = [
    "PPCA",
    "sample_covariance",
    "ppca_closed_form",
    "ppca_log_likelihood",
    "ppca_posterior",
    "ppca_em_step",
]

_LOG_2PI = float(np.log(2.0 * np.pi))
_BLOCK = 1024  # rows per block when scoring block by block


# ----------------------------------------------------------------------------- the closed form
def _closed_form(X: np.ndarray, M: int):
    """Tipping & Bishop's maximum-likelihood solution for valid ``X`` ``[eq:ppca-closed-form]``."""
    N, D = X.shape
    mean = _mean(X)
    if N >= D:
        S = _sample_covariance(X, mean, full=False)  # upper triangle only
        trace_S = float(np.trace(S))
        lam, U = eigh(S, lower=False, subset_by_index=[D - M, D - 1], overwrite_a=True, check_finite=False)
        lam, U = lam[::-1], U[:, ::-1]  # descending
        # sigma^2 = mean of the D - M discarded eigenvalues = (tr S - sum of the kept ones) / (D - M)
        sigma2 = (trace_S - float(lam.sum())) / (D - M)
    else:  # fewer rows than features: SVD of the centred data, S = V diag(s^2 / N) V^T
        _, s, Vt = svd(X - mean, full_matrices=False, overwrite_a=True, check_finite=False)
        lam, U = s[:M] ** 2 / N, Vt[:M].T
        trace_S = float(np.sum(s.astype(np.float64) ** 2)) / N
        sigma2 = float(np.sum(s[M:].astype(np.float64) ** 2)) / (N * (D - M))
    # rounding in S, its eigenvalues and the subtraction above: ~eps (tr S + M lambda_1) / (D - M)
    lam_max = float(lam[0])
    if not sigma2 > 100.0 * np.finfo(X.dtype).eps * (trace_S + M * lam_max) / (D - M):
        hint = " or fit in float64" if X.dtype == np.float32 else ""
        raise ValueError(
            f"the data have (numerically) no variance outside their top {M} principal directions "
            f"(sigma^2 = {sigma2:.3g}, largest eigenvalue {lam_max:.3g}): PPCA's noise variance would be 0; "
            f"reduce n_components{hint}, or check for constant / duplicated data"
        )
    scale = np.sqrt(np.clip(lam - sigma2, 0.0, None))
    W = U * scale.astype(X.dtype)  # W = U_M (L_M - sigma^2 I)^{1/2}, R = I  [eq:ppca-closed-form]
    # deterministic signs: the largest-magnitude entry of each column is positive
    signs = np.sign(W[np.argmax(np.abs(W), axis=0), np.arange(M)])
    W *= np.where(signs == 0, 1, signs).astype(X.dtype)
    return mean, np.ascontiguousarray(W), float(sigma2)


def ppca_closed_form(X, n_components: int):
    """Maximum-likelihood PPCA parameters in closed form ``[eq:ppca-closed-form]``.

    Parameters
    ----------
    X : array_like of shape (N, D)
    n_components : int
        Latent dimension ``M`` with ``1 <= M < D`` and ``M < N - 1``.

    Returns
    -------
    mean : ndarray of shape (D,)
    W : ndarray of shape (D, M)
        ``U_M (L_M - sigma^2 I)^{1/2}`` (rotation ``R = I``; column signs fixed).
    sigma2 : float
        Mean of the ``D - M`` smallest eigenvalues of the biased sample covariance.
    """
    X = check_array(X, "X", dtype=None, min_rows=2)
    M = _check_components(n_components, X.shape)
    return _closed_form(X, M)


def _check_components(n_components, shape) -> int:
    N, D = shape
    M = check_positive_int(n_components, "n_components")
    if M >= D:
        raise ValueError(
            f"n_components={M} must be smaller than the number of features D={D} "
            "(PPCA needs at least one discarded direction to estimate sigma^2)"
        )
    if M >= N - 1:
        raise ValueError(
            f"n_components={M} needs n_samples > n_components + 1, got n_samples={N}: the sample "
            f"covariance of {N} points has rank at most {N - 1}, which leaves no variance for sigma^2"
        )
    return M


# ----------------------------------------------------------------------------- likelihood and posterior
def _m_cholesky(W: np.ndarray, sigma2: float) -> np.ndarray:
    """Lower Cholesky factor of ``Mmat = W^T W + sigma^2 I`` (M, M) ``[eq:ppca-m-matrix]``."""
    Mmat = W.T @ W
    Mmat[np.diag_indices_from(Mmat)] += sigma2
    return cholesky(Mmat, lower=True, check_finite=False)


def _log_det_C(L: np.ndarray, sigma2: float, D: int) -> float:
    """``log|W W^T + sigma^2 I| = (D - M) log sigma^2 + log|Mmat|`` ``[eq:ppca-det-lemma]``."""
    M = L.shape[0]
    return float((D - M) * np.log(sigma2) + 2.0 * np.sum(np.log(np.diag(L).astype(np.float64))))


def _log_likelihood(X, mean, W, sigma2):
    """Per-row ``log N(x | mean, W W^T + sigma^2 I)`` for valid inputs, O(N D M + D M^2)."""
    N, D = X.shape
    L = _m_cholesky(W, sigma2)
    const = -0.5 * (D * _LOG_2PI + _log_det_C(L, sigma2, D))
    out = np.empty(N, dtype=X.dtype)
    for start in range(0, N, _BLOCK):
        Xc = X[start : start + _BLOCK] - mean
        # (x-mu)^T C^{-1} (x-mu) = (|x-mu|^2 - |L^{-1} W^T (x-mu)|^2) / sigma^2  [eq:ppca-woodbury]
        Z = solve_triangular(L, (Xc @ W).T, lower=True, check_finite=False)
        maha = (np.einsum("nd,nd->n", Xc, Xc) - np.einsum("mn,mn->n", Z, Z)) / sigma2
        out[start : start + _BLOCK] = const - 0.5 * maha
    return out


def _posterior(X, mean, W, sigma2):
    """``p(z|x) = N(Mmat^{-1} W^T (x - mean), sigma^2 Mmat^{-1})`` for valid inputs ``[eq:ppca-posterior]``."""
    L = _m_cholesky(W, sigma2)
    means = cho_solve((L, True), (W.T @ (X - mean).T), check_finite=False).T
    cov = sigma2 * cho_solve((L, True), np.eye(W.shape[1], dtype=W.dtype), check_finite=False)
    return np.ascontiguousarray(means), 0.5 * (cov + cov.T)


def _check_params(X, mean, W, sigma2):
    X = check_array(X, "X", dtype=None)
    D = X.shape[1]
    W = check_array(W, "W", dtype=X.dtype, n_features=None)
    if W.shape[0] != D or not 1 <= W.shape[1] < D:
        raise ValueError(f"W must have shape (D, M) = ({D}, M) with 1 <= M < D, got {W.shape}")
    mean = check_array(mean, "mean", ndim=1, dtype=X.dtype, n_features=D)
    return X, mean, W, check_positive_float(sigma2, "sigma2")


def ppca_log_likelihood(X, mean, W, sigma2) -> np.ndarray:
    """Per-row marginal log-likelihood ``log N(x_n | mean, W W^T + sigma^2 I)`` in nats.

    Uses the matrix-determinant lemma ``[eq:ppca-det-lemma]`` and the Woodbury
    identity ``[eq:ppca-woodbury]``: cost O(N D M + D M^2); the D x D covariance is
    never formed.

    Parameters
    ----------
    X : array_like of shape (N, D)
    mean : array_like of shape (D,)
    W : array_like of shape (D, M)
    sigma2 : float > 0

    Returns
    -------
    ndarray of shape (N,)
    """
    return _log_likelihood(*_check_params(X, mean, W, sigma2))


def ppca_posterior(X, mean, W, sigma2):
    """Posterior ``p(z_n | x_n)`` ``[eq:ppca-posterior]``.

    Returns
    -------
    means : ndarray of shape (N, M)
        ``Mmat^{-1} W^T (x_n - mean)`` with ``Mmat = W^T W + sigma^2 I``.
    cov : ndarray of shape (M, M)
        ``sigma^2 Mmat^{-1}`` (the same for every row).
    """
    return _posterior(*_check_params(X, mean, W, sigma2))


# ----------------------------------------------------------------------------- EM
def ppca_em_step(SW, trace_S: float, W, sigma2: float):
    """One EM iteration of PPCA written with the sample covariance ``S``.

    Parameters
    ----------
    SW : ndarray of shape (D, M)
        ``S @ W`` for the biased sample covariance ``S`` (callers may form it
        from the data as ``Xc^T (Xc W) / N`` without ever building ``S``).
    trace_S : float
        ``tr S``.
    W : ndarray of shape (D, M)
    sigma2 : float

    Returns
    -------
    W_new : ndarray of shape (D, M)
        ``S W (sigma^2 I + Mmat^{-1} W^T S W)^{-1}`` ``[eq:ppca-em-m]``.
    sigma2_new : float
        ``tr(S - S W Mmat^{-1} W_new^T) / D`` ``[eq:ppca-em-m]``.
    mean_log_likelihood : float
        ``(1/N) log p(X | W, sigma^2)`` at the *old* parameters ``[eq:ppca-loglik]``.

    Notes
    -----
    The E-step statistics ``E[z_n]`` and ``E[z_n z_n^T]`` ``[eq:ppca-em-e]`` enter
    only through ``sum_n E[z_n] (x_n - mean)^T = N Mmat^{-1} W^T S`` and
    ``sum_n E[z_n z_n^T] = N (sigma^2 Mmat^{-1} + Mmat^{-1} W^T S W Mmat^{-1})``,
    which is how the M-step reduces to the two formulas above.  Cost O(D M^2).
    """
    W = check_array(W, "W", dtype=None)
    SW = check_array(SW, "SW", dtype=W.dtype)
    if SW.shape != W.shape:
        raise ValueError(f"SW must have the shape of W {W.shape}, got {SW.shape}")
    return _em_step(SW, check_positive_float(trace_S, "trace_S"), W, check_positive_float(sigma2, "sigma2"))


def _em_step(SW, trace_S, W, sigma2):
    """``ppca_em_step`` for valid inputs."""
    D, M = W.shape
    L = _m_cholesky(W, sigma2)
    WtSW = W.T @ SW
    Minv_WtSW = cho_solve((L, True), WtSW, check_finite=False)
    # mean log-likelihood: -1/2 (D log 2 pi + log|C| + tr(C^{-1} S))  [eq:ppca-det-lemma] [eq:ppca-woodbury]
    tr_Cinv_S = (trace_S - float(np.trace(Minv_WtSW))) / sigma2
    ll = -0.5 * (D * _LOG_2PI + _log_det_C(L, sigma2, D) + tr_Cinv_S)
    A = Minv_WtSW
    A[np.diag_indices_from(A)] += sigma2
    W_new = np.linalg.solve(A.T, SW.T).T  # [eq:ppca-em-m]
    B = cho_solve((L, True), W_new.T @ SW, check_finite=False)
    sigma2_new = (trace_S - float(np.trace(B))) / D  # [eq:ppca-em-m]
    return np.ascontiguousarray(W_new), float(sigma2_new), float(ll)


def _fit_em(X, M, *, max_iter, tol, rng, progress):
    """EM from a random start for valid ``X``: returns ``(mean, W, sigma2, EMResult)``.

    The iterations run in float64 whatever the data's dtype (a float32 log-likelihood is too coarse to
    see EM's small late increases); ``W`` is returned in ``X.dtype``.
    """
    N, D = X.shape
    mean = _mean(X)
    if N >= D:  # S once (in X's dtype: the expensive part), then O(D^2 M) per iteration
        S = _sample_covariance(X, mean).astype(np.float64, copy=False)
        trace_S = float(np.trace(S))
        cov_times = S.__matmul__
    else:  # S never formed: S W = Xc^T (Xc W) / N, O(N D M) per iteration
        Xc = (X - mean).astype(np.float64, copy=False)
        trace_S = float(np.einsum("nd,nd->", Xc, Xc)) / N
        cov_times = lambda W: Xc.T @ (Xc @ W) / N  # noqa: E731
    if not trace_S > 0:
        raise ValueError("X has zero variance (all rows equal): PPCA cannot be fitted")
    floor = 100.0 * np.finfo(X.dtype).eps * trace_S / D  # below this sigma^2 is rounding noise

    def step(params):
        W, sigma2 = params
        W_new, sigma2_new, ll = _em_step(cov_times(W), trace_S, W, sigma2)
        if not sigma2_new > floor:
            raise ValueError(
                f"EM drove sigma^2 to {sigma2_new:.3g}: the data have (numerically) no variance "
                f"outside {M} directions; reduce n_components"
            )
        return (W_new, sigma2_new), ll

    W0 = rng.standard_normal((D, M)) * math.sqrt(trace_S / D)
    result = run_em(step, (W0, trace_S / D), max_iter=max_iter, tol=tol, progress=progress, desc="PPCA EM")
    W, sigma2 = result.params
    return mean, W.astype(X.dtype), sigma2, result


# ----------------------------------------------------------------------------- the estimator
class PPCA:
    """Probabilistic PCA ``x = W z + mean + eps``, ``z ~ N(0, I_M)``, ``eps ~ N(0, sigma^2 I_D)`` ``[eq:ppca-model]``.

    Parameters
    ----------
    n_components : int
        Latent dimension ``M``, ``1 <= M < D``.
    method : {"closed_form", "em"}
        Tipping & Bishop's eigen-solution ``[eq:ppca-closed-form]`` or EM from a
        random start ``[eq:ppca-em-e]`` ``[eq:ppca-em-m]``.
    max_iter, tol : int, float
        EM only: stop when the mean log-likelihood changes by less than ``tol``.
    rng : None, int or numpy.random.Generator
        EM only: the random initial ``W``.
    progress : bool
        EM only: show a progress bar (on a TTY).

    Attributes
    ----------
    mean_ : ndarray of shape (D,)
    W_ : ndarray of shape (D, M)
    noise_variance_ : float
        ``sigma^2``.
    lower_bounds_ : list of float or None
        EM: mean log-likelihood per sample at the start of each iteration
        (non-decreasing ``[eq:em-monotone]``); None for the closed form.
    n_iter_ : int
        EM iterations (0 for the closed form).
    converged_ : bool
        EM reached ``tol`` (True for the closed form).

    Notes
    -----
    float32 data are fitted and scored in float32; anything else in float64.
    """

    def __init__(self, n_components, *, method="closed_form", max_iter=1000, tol=1e-6, rng=None, progress=False):
        self.n_components = n_components
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.rng = rng
        self.progress = progress

    def fit(self, X):
        """Fit the model to ``X`` of shape (N, D), N >= 2; returns ``self``."""
        method = check_option(self.method, "method", ("closed_form", "em"))
        X = check_array(X, "X", dtype=None, min_rows=2)
        M = _check_components(self.n_components, X.shape)
        if method == "closed_form":
            self.mean_, self.W_, self.noise_variance_ = _closed_form(X, M)
            self.lower_bounds_, self.n_iter_, self.converged_ = None, 0, True
        else:
            max_iter = check_positive_int(self.max_iter, "max_iter")
            tol = check_nonnegative_float(self.tol, "tol")
            rng = check_rng(self.rng)
            self.mean_, self.W_, self.noise_variance_, res = _fit_em(
                X, M, max_iter=max_iter, tol=tol, rng=rng, progress=bool(self.progress)
            )
            self.lower_bounds_, self.n_iter_, self.converged_ = list(res.lower_bounds), res.n_iter, res.converged
            if not res.converged and tol > 0:
                warnings.warn(
                    f"PPCA EM did not converge in max_iter={max_iter} iterations (tol={tol}); "
                    "increase max_iter or use method='closed_form'",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self.n_features_in_ = X.shape[1]
        return self

    # ------------------------------------------------------------------ evaluation
    def _check_X(self, X):
        check_is_fitted(self, ("W_", "mean_", "noise_variance_"))
        return check_array(X, "X", dtype=self.W_.dtype, n_features=self.n_features_in_)

    def score_samples(self, X) -> np.ndarray:
        """Per-row ``log p(x_n)`` in nats, shape (N,) ``[eq:ppca-marginal]``."""
        return _log_likelihood(self._check_X(X), self.mean_, self.W_, self.noise_variance_)

    def score(self, X) -> float:
        """Mean per-row log-likelihood in nats."""
        return float(np.mean(self.score_samples(X), dtype=np.float64))

    def posterior(self, X):
        """``p(z_n | x_n)`` ``[eq:ppca-posterior]``: ``(means (N, M), cov (M, M))``."""
        return _posterior(self._check_X(X), self.mean_, self.W_, self.noise_variance_)

    def transform(self, X) -> np.ndarray:
        """Posterior means ``E[z_n | x_n]``, shape (N, M)."""
        return self.posterior(X)[0]

    def covariance(self) -> np.ndarray:
        """Model covariance ``W W^T + sigma^2 I`` (D, D) ``[eq:ppca-marginal]``."""
        check_is_fitted(self, ("W_", "noise_variance_"))
        C = self.W_ @ self.W_.T
        C[np.diag_indices_from(C)] += self.noise_variance_
        return C

    def precision(self) -> np.ndarray:
        """``(W W^T + sigma^2 I)^{-1} = (I - W Mmat^{-1} W^T) / sigma^2`` (D, D) by Woodbury ``[eq:ppca-woodbury]``."""
        check_is_fitted(self, ("W_", "noise_variance_"))
        W, sigma2 = self.W_, self.noise_variance_
        L = _m_cholesky(W, sigma2)
        P = -(W @ cho_solve((L, True), W.T, check_finite=False))
        P[np.diag_indices_from(P)] += 1.0
        P /= sigma2
        return 0.5 * (P + P.T)

    def sample(self, n, rng=None) -> np.ndarray:
        """Draw ``n`` rows ``W z + mean + sigma eps`` ``[eq:ppca-model]``, shape (n, D).

        ``rng`` (None, int or Generator) is independent of the fitting ``rng``.
        """
        check_is_fitted(self, ("W_", "mean_", "noise_variance_"))
        n = check_positive_int(n, "n")
        rng = check_rng(rng)
        dtype = self.W_.dtype
        D, M = self.W_.shape
        z = rng.standard_normal((n, M), dtype=dtype)
        eps = rng.standard_normal((n, D), dtype=dtype)
        return z @ self.W_.T + self.mean_ + math.sqrt(self.noise_variance_) * eps
