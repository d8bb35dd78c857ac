"""The ELBO identity log p(X) = ELBO(q, theta) + KL(q || p(Z|X, theta)) (docs/em.md, eq:elbo-decomposition),
checked numerically for PPCA and for a Gaussian mixture with an arbitrary q, and its tightness when q is the
exact posterior.  The ELBOs below are written in closed form here, independently of the model classes; the
marginal log-likelihoods come from scipy."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp, rel_entr, xlogy
from scipy.stats import multivariate_normal

LOG_2PI = np.log(2 * np.pi)


# ----------------------------------------------------------------------------- PPCA
def _ppca_params(rng, D, M):
    return rng.standard_normal(D), rng.standard_normal((D, M)), float(rng.uniform(0.2, 2.0))


def _ppca_exact_posterior(X, mean, W, sigma2):
    """p(z|x) by Gaussian conditioning of the joint of (z, x), using the D x D covariance directly."""
    D, M = W.shape
    C = W @ W.T + sigma2 * np.eye(D)
    means = (W.T @ np.linalg.solve(C, (X - mean).T)).T
    cov = np.eye(M) - W.T @ np.linalg.solve(C, W)
    return means, np.broadcast_to(cov, (len(X), M, M))


def _ppca_elbo(X, mean, W, sigma2, m, S):
    """Per-row ELBO for q(z_n) = N(m_n, S_n):  E_q[log p(x|z)] + E_q[log p(z)] + H[q].

    E_q[log N(x | W z + mean, sigma^2 I)] = -D/2 log(2 pi sigma^2) - (|x - mean - W m|^2 + tr(W^T W S)) / (2 sigma^2)
    E_q[log N(z | 0, I)]                 = -M/2 log(2 pi) - (|m|^2 + tr S) / 2
    H[N(m, S)]                           = M/2 (1 + log 2 pi) + 1/2 log|S|
    """
    D, M = W.shape
    resid = X - mean - m @ W.T
    tr_WtW_S = np.einsum("ij,nji->n", W.T @ W, S)
    e_lik = -0.5 * D * np.log(2 * np.pi * sigma2) - (np.sum(resid**2, axis=1) + tr_WtW_S) / (2 * sigma2)
    e_prior = -0.5 * M * LOG_2PI - 0.5 * (np.sum(m**2, axis=1) + np.trace(S, axis1=1, axis2=2))
    entropy = 0.5 * M * (1 + LOG_2PI) + 0.5 * np.linalg.slogdet(S)[1]
    return e_lik + e_prior + entropy


def _kl_gauss(m0, S0, m1, S1):
    """KL(N(m0, S0) || N(m1, S1)) per row, batched."""
    M = m0.shape[-1]
    S1_inv = np.linalg.inv(S1)
    d = m1 - m0
    return 0.5 * (
        np.einsum("nij,nji->n", S1_inv, S0)
        + np.einsum("ni,nij,nj->n", d, S1_inv, d)
        - M
        + np.linalg.slogdet(S1)[1]
        - np.linalg.slogdet(S0)[1]
    )


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), D=st.integers(2, 7), M=st.integers(1, 3))
def test_ppca_log_evidence_is_elbo_plus_kl(seed, D, M):
    M = min(M, D - 1)
    rng = np.random.default_rng(seed)
    mean, W, sigma2 = _ppca_params(rng, D, M)
    X = rng.standard_normal((12, D)) * 2
    log_px = multivariate_normal(mean, W @ W.T + sigma2 * np.eye(D)).logpdf(X).reshape(-1)
    # an arbitrary Gaussian q(z_n) = N(m_n, S_n), different for every row
    m = rng.standard_normal((12, M)) * 2
    A = rng.standard_normal((12, M, M))
    S = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(M)
    post_m, post_S = _ppca_exact_posterior(X, mean, W, sigma2)
    elbo = _ppca_elbo(X, mean, W, sigma2, m, S)
    kl = _kl_gauss(m, S, post_m, post_S)
    np.testing.assert_allclose(elbo + kl, log_px, rtol=1e-10, atol=1e-10)
    assert np.all(kl > 0) and np.all(elbo < log_px)  # Jensen: a strict lower bound for q != posterior
    # tight when q is the exact posterior
    np.testing.assert_allclose(_ppca_elbo(X, mean, W, sigma2, post_m, np.array(post_S)), log_px, rtol=1e-10, atol=1e-10)


def test_ppca_class_posterior_makes_the_bound_tight():
    from probgen.linear_latent import PPCA

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6)) + 1.0
    for method in ("closed_form", "em"):
        model = PPCA(2, method=method, rng=0).fit(X)
        means, cov = model.posterior(X)
        S = np.broadcast_to(cov, (len(X), 2, 2))
        elbo = _ppca_elbo(X, model.mean_, model.W_, model.noise_variance_, means, np.array(S))
        np.testing.assert_allclose(elbo, model.score_samples(X), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- Gaussian mixture
def _gmm_params(rng, K, D):
    weights = rng.dirichlet(np.ones(K))
    means = rng.standard_normal((K, D)) * 2
    A = rng.standard_normal((K, D, D))
    covs = A @ A.transpose(0, 2, 1) + 0.3 * np.eye(D)
    return weights, means, covs


def _log_joint(X, weights, means, covs):
    """log p(x_n, z_n = k) = log pi_k + log N(x_n | mu_k, Sigma_k), shape (N, K), by scipy."""
    return np.stack(
        [np.log(w) + multivariate_normal(mu, c).logpdf(X).reshape(-1) for w, mu, c in zip(weights, means, covs)],
        axis=1,
    )


def _gmm_elbo(log_joint, q):
    """sum_k q_nk (log p(x_n, z_n = k) - log q_nk), per row, with 0 log 0 = 0."""
    return np.sum(q * log_joint, axis=1) - np.sum(xlogy(q, q), axis=1)


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), K=st.integers(1, 5), D=st.integers(1, 4))
def test_gmm_log_evidence_is_elbo_plus_kl(seed, K, D):
    rng = np.random.default_rng(seed)
    weights, means, covs = _gmm_params(rng, K, D)
    X = rng.standard_normal((30, D)) * 3
    lj = _log_joint(X, weights, means, covs)
    log_px = logsumexp(lj, axis=1)
    # an arbitrary row-stochastic q, one row a hard assignment (0 log 0 = 0)
    q = rng.dirichlet(np.full(K, 0.7), size=len(X))
    q[0] = np.eye(K)[rng.integers(K)]
    resp = np.exp(lj - log_px[:, None])  # the exact posterior p(z_n = k | x_n)
    kl = np.sum(rel_entr(q, resp), axis=1)
    elbo = _gmm_elbo(lj, q)
    np.testing.assert_allclose(elbo + kl, log_px, rtol=1e-10, atol=1e-10)
    assert np.all(kl >= -1e-12) and np.all(elbo <= log_px + 1e-10)  # Jensen (equality when q = posterior)
    np.testing.assert_allclose(_gmm_elbo(lj, resp), log_px, rtol=1e-10, atol=1e-10)


def test_gmm_class_predict_proba_makes_the_bound_tight():
    try:
        from probgen.mixture import GaussianMixture
    except ImportError:
        pytest.skip("probgen.mixture.GaussianMixture is not available yet")
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.standard_normal((60, 2)) + c for c in ([0, 0], [4, 0], [0, 4])])
    gm = GaussianMixture(n_components=3, covariance_type="full", rng=0).fit(X)
    lj = _log_joint(X, gm.weights_, gm.means_, gm.covariances_)
    log_px = logsumexp(lj, axis=1)
    np.testing.assert_allclose(_gmm_elbo(lj, gm.predict_proba(X)), log_px, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gm.score_samples(X), log_px, rtol=1e-9, atol=1e-9)
