"""Gaussian mixture: one EM iteration against scikit-learn, and the responsibilities kernel against torch.

* ``gmm_em_iter_full`` / ``gmm_em_iter_diag``: N=100000, D=10, K=8, float64.  probgen runs exactly
  what ``GaussianMixture.fit`` runs per iteration (fused Numba E-step, batched M-step, precision
  Cholesky); scikit-learn runs ``_e_step`` + ``_m_step`` of a model initialised at the same
  parameters (its own per-iteration work, with no input validation on either side).
* ``responsibilities``: N=10^6, K=16 given log-probabilities, float64: log-sum-exp normalisation
  and exp, :func:`probgen.kernels.normalize_log_prob` against ``torch.logsumexp`` + ``torch.exp``.

``--quick`` shrinks N by 10x.
"""
from __future__ import annotations

import warnings

import numpy as np

from ._harness import Case

D, K = 10, 8


def _blobs(N, rng):
    centres = rng.normal(scale=3.0, size=(K, D))
    labels = rng.integers(K, size=N)
    return centres[labels] + rng.standard_normal((N, D)) * rng.uniform(0.5, 1.5, size=(K, D))[labels]


def _gmm_setup(covariance_type):
    def setup(quick):
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        from probgen.mixture.gaussian_mixture import _em_step

        rng = np.random.default_rng(0)
        N = 10_000 if quick else 100_000
        X = _blobs(N, rng)
        sk = SkGaussianMixture(K, covariance_type=covariance_type, max_iter=2, random_state=0,
                               init_params="random_from_data")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk.fit(X)
        params = (sk.weights_.copy(), sk.means_.copy(), sk.covariances_.copy(),
                  sk.precisions_cholesky_.copy())
        resp = np.empty((N, K))
        log_norm = np.empty(N)

        def probgen_fn():
            return _em_step(X, params, sk.reg_covar, covariance_type, resp, log_norm)

        def peer_fn():
            _, log_resp = sk._e_step(X)
            sk._m_step(X, log_resp)

        return probgen_fn, peer_fn

    return setup


def _responsibilities_setup(quick):
    import torch

    from probgen.kernels import normalize_log_prob

    rng = np.random.default_rng(0)
    N = 100_000 if quick else 1_000_000
    log_prob = rng.normal(scale=5.0, size=(N, 16))
    t = torch.from_numpy(log_prob)

    def probgen_fn():
        return normalize_log_prob(log_prob)

    def peer_fn():
        log_norm = torch.logsumexp(t, dim=1, keepdim=True)
        return torch.exp(t - log_norm), log_norm

    return probgen_fn, peer_fn


CASES = [
    Case("gmm_em_iter_full", f"N=100000 D={D} K={K}", "float64", "scikit-learn", _gmm_setup("full")),
    Case("gmm_em_iter_diag", f"N=100000 D={D} K={K}", "float64", "scikit-learn", _gmm_setup("diag")),
    Case("responsibilities", "N=1000000 K=16", "float64", "torch", _responsibilities_setup),
]
