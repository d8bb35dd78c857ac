"""``GaussianMixture``: a thin estimator around the pure ``e_step``/``m_step`` and the shared EM driver."""
from __future__ import annotations

import math
import warnings

import numpy as np

from .._validation import (
    check_array,
    check_is_fitted,
    check_nonnegative_float,
    check_option,
    check_positive_int,
    check_rng,
)
from ..em import run_em
from ..kernels.responsibilities import _mixture_responsibilities, _raise_on_bad_rows
from ._estep import _e_step_into, log_weights
from ._init import INIT_PARAMS, initial_responsibilities
from ._mstep import _m_step
from ._params import (
    COVARIANCE_TYPES,
    check_means,
    check_precisions,
    check_weights,
    n_parameters,
    precision_cholesky,
    precision_cholesky_from_precisions,
    precisions_from_cholesky,
)

__all__ = ["GaussianMixture", "ConvergenceWarning"]


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the log-likelihood changed by less than ``tol``."""


def _em_step(X, params, reg_covar, covariance_type, resp, log_norm):
    """One EM iteration as ``fit`` runs it: valid input, scratch ``resp`` (N, K) and ``log_norm`` (N,).

    Returns ``((weights, means, covariances, prec_chol), mean log-likelihood at the old params)``,
    the contract of :func:`probgen.em.run_em` ``[eq:em-general]``.
    """
    weights, means, _, prec_chol = params
    ll = _e_step_into(X, weights, means, prec_chol, covariance_type, resp, log_norm)  # [eq:gmm-estep]
    weights, means, covariances = _m_step(X, resp, reg_covar, covariance_type)  # [eq:gmm-complete]
    prec_chol = precision_cholesky(covariances, covariance_type)  # [eq:gmm-prec-chol]
    return (weights, means, covariances, prec_chol), ll


class GaussianMixture:
    """Gaussian mixture fitted by EM; the constructor mirrors scikit-learn's.

    ``p(x) = sum_k pi_k N(x | mu_k, Sigma_k)`` ``[eq:gmm-loglik]``.

    Parameters
    ----------
    n_components : int
        K, the number of components.
    covariance_type : {"full", "tied", "diag", "spherical"}
        Each component's own full covariance; one shared full covariance; diagonal
        covariances; one variance per component ``[eq:gmm-cov-types]``.
    tol : float
        Stop when the mean log-likelihood changes by less than ``tol`` (0: run ``max_iter``).
    reg_covar : float
        Added to the diagonal of every covariance ``[eq:gmm-reg-covar]``.
    max_iter : int
        EM iterations per initialisation.
    n_init : int
        Initialisations; the one with the highest final log-likelihood is kept.
    init_params : {"kmeans++", "random", "random_from_data"}
        How the initial responsibilities are made (see :func:`initial_responsibilities`).
    weights_init, means_init, precisions_init : array_like or None
        User initial values; each replaces what ``init_params`` would give.  With all three,
        ``init_params`` is not used.  ``precisions_init`` has the shape of ``covariances_``.
    rng : None, int or numpy.random.Generator
        Randomness of the initialisation.
    progress : bool
        Show a progress bar over EM iterations (only on a terminal).

    Attributes
    ----------
    weights_ : ndarray of shape (K,)
    means_ : ndarray of shape (K, D)
    covariances_ : ndarray
        (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical.
    precisions_cholesky_ : ndarray, shape of ``covariances_``
        Upper-triangular ``U`` with ``U U^T = Sigma^{-1}`` (``1/sigma`` for diag/spherical).
    precisions_ : ndarray, shape of ``covariances_``
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per sample at the start of the last iteration (as scikit-learn).
    lower_bounds_ : ndarray of shape ``(n_iter_,)``
        The mean log-likelihood of every iteration; never decreasing ``[eq:em-monotone]``.
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans++",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        rng=None,
        progress=False,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.rng = rng
        self.progress = progress

    # ------------------------------------------------------------------ fitting
    def _initial_params(self, X, reg_covar, rng, inits):
        """(weights, means, covariances or None, prec_chol) to start EM from."""
        weights, means, precisions = inits
        ct = self.covariance_type
        covariances = None
        if weights is None or means is None or precisions is None:
            resp = initial_responsibilities(X, self.n_components, self.init_params, rng)
            w0, m0, covariances = _m_step(X, resp, reg_covar, ct)
            weights = w0 if weights is None else weights
            means = m0 if means is None else means
        if precisions is None:
            prec_chol = precision_cholesky(covariances, ct)
        else:
            covariances = None
            prec_chol = precision_cholesky_from_precisions(precisions, ct).astype(X.dtype)
        return weights, means, covariances, prec_chol

    def fit(self, X):
        """Estimate the parameters by EM ``[eq:gmm-estep]``, ``[eq:gmm-complete]``.

        Parameters
        ----------
        X : array_like of shape (N, D)
            Training data (float32 kept, anything else converted to float64); N >= 2 and
            N >= n_components.

        Returns
        -------
        self
        """
        K = check_positive_int(self.n_components, "n_components")
        ct = check_option(self.covariance_type, "covariance_type", COVARIANCE_TYPES)
        tol = check_nonnegative_float(self.tol, "tol")
        reg_covar = check_nonnegative_float(self.reg_covar, "reg_covar")
        max_iter = check_positive_int(self.max_iter, "max_iter")
        n_init = check_positive_int(self.n_init, "n_init")
        check_option(self.init_params, "init_params", INIT_PARAMS)
        X = check_array(X, "X", dtype=None, min_rows=2)
        N, D = X.shape
        if N < K:
            raise ValueError(
                f"n_components={K} is larger than the number of samples N={N}: "
                f"use at most n_components={N} or more data"
            )
        dt = X.dtype
        inits = (
            None if self.weights_init is None else check_weights(self.weights_init, K, dt),
            None if self.means_init is None else check_means(self.means_init, K, D, dt),
            None if self.precisions_init is None
            else check_precisions(self.precisions_init, ct, K, D, dt),
        )
        rng = check_rng(self.rng)

        resp = np.empty((N, K), dtype=dt)  # reused by every E-step
        log_norm = np.empty(N, dtype=dt)

        def step(params):
            return _em_step(X, params, reg_covar, ct, resp, log_norm)

        best = None
        for _ in range(n_init):
            params = self._initial_params(X, reg_covar, rng, inits)
            result = run_em(step, params, max_iter=max_iter, tol=tol,
                            progress=bool(self.progress), desc="GaussianMixture")
            if best is None or result.lower_bound > best.lower_bound:
                best = result
        if not best.converged:
            warnings.warn(
                f"GaussianMixture did not converge in max_iter={max_iter} iterations (tol={tol}); "
                "increase max_iter or tol, or try another initialisation",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = best.params
        self.precisions_ = precisions_from_cholesky(self.precisions_cholesky_, ct)
        self.converged_ = bool(best.converged)
        self.n_iter_ = int(best.n_iter)
        self.lower_bounds_ = np.asarray(best.lower_bounds, dtype=np.float64)
        self.lower_bound_ = float(best.lower_bound)
        self.n_features_in_ = D
        return self

    # ------------------------------------------------------------------ evaluation
    def _check_X(self, X):
        check_is_fitted(self, ("means_", "precisions_cholesky_"))
        return check_array(X, "X", dtype=self.means_.dtype, n_features=self.n_features_in_)

    def _responsibilities(self, X, want_log):
        X = self._check_X(X)
        out = np.empty((X.shape[0], self.n_components), dtype=X.dtype)
        log_norm = np.empty(X.shape[0], dtype=X.dtype)
        _mixture_responsibilities(X, log_weights(self.weights_), self.means_, self.precisions_cholesky_,
                                  self.covariance_type, want_log, out, log_norm)
        _raise_on_bad_rows(log_norm, "X")
        return out, log_norm

    def score_samples(self, X):
        """``log p(x_n)`` in nats for each row ``[eq:gmm-loglik]``, shape (N,)."""
        return self._responsibilities(X, True)[1]

    def score(self, X):
        """Mean log-likelihood per sample in nats ``[eq:gmm-loglik]``."""
        return float(np.mean(self.score_samples(X), dtype=np.float64))

    def predict_proba(self, X):
        """Posterior ``p(z_n = k | x_n)`` (responsibilities) ``[eq:gmm-estep]``, shape (N, K)."""
        return self._responsibilities(X, False)[0]

    def predict(self, X):
        """Most probable component of each row, shape (N,)."""
        return np.argmax(self._responsibilities(X, True)[0], axis=1)

    def sample(self, n_samples=1, rng=None):
        """Draw ``n_samples`` points by ancestral sampling: ``z ~ Cat(pi)``, ``x ~ N(mu_z, Sigma_z)``.

        Parameters
        ----------
        n_samples : int
        rng : None, int or numpy.random.Generator
            Randomness of the draw (None: fresh entropy).

        Returns
        -------
        X : ndarray of shape (n_samples, D)
            Grouped by component, as scikit-learn returns them.
        labels : ndarray of shape (n_samples,)
            The component of each row (int64).
        """
        check_is_fitted(self, ("means_", "covariances_"))
        n = check_positive_int(n_samples, "n_samples")
        rng = check_rng(rng)
        ct = self.covariance_type
        K, D = self.means_.shape
        p = np.asarray(self.weights_, dtype=np.float64)
        counts = rng.multinomial(n, p / p.sum())
        cov = np.asarray(self.covariances_, dtype=np.float64)
        parts = []
        for k in range(K):
            z = rng.standard_normal((counts[k], D))
            if ct == "full":
                x = z @ np.linalg.cholesky(cov[k]).T
            elif ct == "tied":
                x = z @ np.linalg.cholesky(cov).T
            else:
                x = z * np.sqrt(cov[k])
            parts.append(self.means_[k] + x)
        X = np.concatenate(parts).astype(self.means_.dtype, copy=False)
        labels = np.repeat(np.arange(K, dtype=np.int64), counts)
        return X, labels

    # ------------------------------------------------------------------ model selection
    def _n_parameters(self):
        check_is_fitted(self, "means_")
        return n_parameters(self.n_components, self.n_features_in_, self.covariance_type)

    def bic(self, X):
        """Bayesian information criterion ``-2 log L + p log N`` (lower is better) ``[eq:gmm-bic]``."""
        X = self._check_X(X)
        N = X.shape[0]
        return -2.0 * self.score(X) * N + self._n_parameters() * math.log(N)

    def aic(self, X):
        """Akaike information criterion ``-2 log L + 2 p`` (lower is better) ``[eq:gmm-bic]``."""
        X = self._check_X(X)
        return -2.0 * self.score(X) * X.shape[0] + 2.0 * self._n_parameters()
