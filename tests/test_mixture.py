"""probgen.mixture.GaussianMixture: scikit-learn oracle, EM properties, scipy densities, sampling,
information criteria, bad input and degenerate data."""
import warnings

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from probgen._validation import NotFittedError
from probgen.mixture import (
    ConvergenceWarning,
    GaussianMixture,
    e_step,
    kmeans_plusplus,
    m_step,
    precision_cholesky,
    precision_cholesky_from_precisions,
    precisions_from_cholesky,
)

TYPES = ("full", "tied", "diag", "spherical")


def _blobs(rng, N=240, D=3, K=3, spread=4.0):
    centres = rng.normal(scale=spread, size=(K, D))
    labels = rng.integers(K, size=N)
    scales = rng.uniform(0.4, 1.5, size=(K, D))
    return centres[labels] + rng.standard_normal((N, D)) * scales[labels]


def _full_covariances(gm):
    """covariances_ of any type as (K, D, D)."""
    K, D = gm.means_.shape
    c = gm.covariances_
    return {
        "full": lambda: c,
        "tied": lambda: np.broadcast_to(c, (K, D, D)),
        "diag": lambda: np.stack([np.diag(v) for v in c]),
        "spherical": lambda: np.stack([v * np.eye(D) for v in c]),
    }[gm.covariance_type]()


def _initial_values(rng, X, K, ct):
    D = X.shape[1]
    weights = rng.dirichlet(np.full(K, 5.0))
    means = X[rng.choice(len(X), K, replace=False)] + 0.1
    if ct == "full":
        A = rng.normal(size=(K, D, D)) * 0.2
        precisions = A @ A.transpose(0, 2, 1) + np.eye(D)
    elif ct == "tied":
        A = rng.normal(size=(D, D)) * 0.2
        precisions = A @ A.T + np.eye(D)
    elif ct == "diag":
        precisions = rng.uniform(0.5, 2.0, size=(K, D))
    else:
        precisions = rng.uniform(0.5, 2.0, size=K)
    return weights, means, precisions


# ----------------------------------------------------------------------------- scikit-learn oracle
@pytest.mark.parametrize("ct", TYPES)
def test_fifty_iterations_agree_with_sklearn(ct):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    rng = np.random.default_rng(42)
    X = _blobs(rng, N=300, D=4, K=3)
    w0, m0, p0 = _initial_values(rng, X, 3, ct)
    kw = dict(covariance_type=ct, tol=0.0, max_iter=50, reg_covar=1e-6,
              weights_init=w0, means_init=m0, precisions_init=p0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(3, **kw).fit(X)
        gm = GaussianMixture(3, **kw).fit(X)
    assert gm.n_iter_ == sk.n_iter_ == 50 and not gm.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        np.testing.assert_allclose(getattr(gm, name), getattr(sk, name), rtol=1e-8, atol=1e-8, err_msg=name)
    np.testing.assert_allclose(gm.lower_bounds_, sk.lower_bounds_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-8)
    np.testing.assert_allclose(gm.score_samples(X), sk.score_samples(X), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(gm.predict_proba(X), sk.predict_proba(X), rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(gm.predict(X), sk.predict(X))
    np.testing.assert_allclose(gm.bic(X), sk.bic(X), rtol=1e-10)
    np.testing.assert_allclose(gm.aic(X), sk.aic(X), rtol=1e-10)


# ----------------------------------------------------------------------------- EM properties
def _spd_checks(gm, X):
    resp = gm.predict_proba(X)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(resp >= 0)
    np.testing.assert_allclose(gm.weights_.sum(), 1.0, rtol=1e-12)
    assert np.all(gm.weights_ >= 0)
    for cov in _full_covariances(gm):
        np.testing.assert_allclose(cov, cov.T, atol=1e-12)
        assert np.linalg.eigvalsh(cov).min() > 0
    assert np.all(np.isfinite(gm.score_samples(X)))


@given(seed=st.integers(0, 2**31 - 1), N=st.integers(20, 80), D=st.integers(1, 3),
       K=st.integers(1, 3), ct=st.sampled_from(TYPES))
def test_exact_em_never_decreases_the_log_likelihood(seed, N, D, K, ct):
    """With reg_covar=0 every step is exact EM, so [eq:em-monotone] is a theorem."""
    rng = np.random.default_rng(seed)
    X = _blobs(rng, N=N, D=D, K=K, spread=rng.uniform(0.5, 5.0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("error", RuntimeWarning)  # run_em warns on any decrease
            gm = GaussianMixture(K, covariance_type=ct, tol=0.0, max_iter=15, reg_covar=0.0,
                                 init_params="random", rng=seed).fit(X)
    except ValueError as exc:  # a component collapsed: legitimate without regularisation
        assert "reg_covar" in str(exc)
        reject()
    lb = gm.lower_bounds_
    assert np.all(np.diff(lb) >= -1e-10 * np.maximum(1.0, np.abs(lb[1:])))
    _spd_checks(gm, X)


def _trace_precision(cov, ct, K, D):
    """tr(Sigma_k^{-1}) per component."""
    if ct == "full":
        return np.array([np.trace(np.linalg.inv(c)) for c in cov])
    if ct == "tied":
        return np.full(K, np.trace(np.linalg.inv(cov)))
    if ct == "diag":
        return (1.0 / cov).sum(axis=1)
    return D / cov


@given(seed=st.integers(0, 2**31 - 1), N=st.integers(8, 60), D=st.integers(1, 3),
       K=st.integers(1, 4), ct=st.sampled_from(TYPES))
def test_regularised_em_bound_and_class_matches_pure_functions(seed, N, D, K, ct):
    """The M-step with reg_covar=lam maximises Q - lam/2 sum_k N_k tr(Sigma_k^{-1}) [eq:gmm-reg-covar],
    so the log-likelihood can drop by at most lam/2 sum_k N_k (tr Sigma_k,old^-1 - tr Sigma_k,new^-1) / N."""
    lam = 0.05
    rng = np.random.default_rng(seed)
    X = _blobs(rng, N=N, D=D, K=K, spread=rng.uniform(0.5, 5.0))
    w0, m0, p = _initial_values(rng, X, K, ct)
    w, m, U = w0, m0, precision_cholesky_from_precisions(p, ct)
    cov = np.linalg.inv(p) if ct in ("full", "tied") else 1.0 / p
    lls = []
    for _ in range(8):
        log_resp, log_norm = e_step(X, w, m, U, ct)
        nk = np.exp(log_resp).sum(axis=0)
        w, m, new_cov = m_step(X, np.exp(log_resp), lam, ct)
        U = precision_cholesky(new_cov, ct)
        ll_new = e_step(X, w, m, U, ct)[1].mean()
        allowed = 0.5 * lam * nk @ (_trace_precision(cov, ct, K, D) - _trace_precision(new_cov, ct, K, D)) / N
        assert ll_new - log_norm.mean() >= -max(allowed, 0.0) - 1e-10 * max(1.0, abs(ll_new))
        lls.append(log_norm.mean())
        cov = new_cov
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(K, covariance_type=ct, tol=0.0, max_iter=8, reg_covar=lam,
                             weights_init=w0, means_init=m0, precisions_init=p).fit(X)
    np.testing.assert_allclose(gm.lower_bounds_, lls, rtol=1e-10, atol=1e-10)
    _spd_checks(gm, X)


def test_ll_of_final_params_is_at_least_the_last_lower_bound():
    rng = np.random.default_rng(5)
    X = _blobs(rng)
    gm = GaussianMixture(3, rng=0, tol=1e-8, max_iter=200).fit(X)
    assert gm.converged_
    assert gm.score(X) >= gm.lower_bound_ - 1e-12  # one more M-step cannot hurt [eq:em-monotone]
    np.testing.assert_allclose(gm.lower_bound_, gm.lower_bounds_[-1])
    assert gm.lower_bounds_.shape == (gm.n_iter_,)


def test_e_step_and_m_step_pure_functions():
    rng = np.random.default_rng(9)
    X = _blobs(rng, N=200, D=3, K=2)
    gm = GaussianMixture(2, rng=1).fit(X)
    log_resp, log_norm = e_step(X, gm.weights_, gm.means_, gm.precisions_cholesky_, "full")
    np.testing.assert_allclose(np.exp(log_resp), gm.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(log_norm, gm.score_samples(X), rtol=1e-12)
    resp = np.exp(log_resp)
    weights, means, covs = m_step(X, resp, 1e-6, "full")
    nk = resp.sum(axis=0)
    np.testing.assert_allclose(weights, nk / len(X), rtol=1e-12)  # [eq:gmm-mstep-weights]
    for k in range(2):
        mu = resp[:, k] @ X / nk[k]
        np.testing.assert_allclose(means[k], mu, rtol=1e-12)
        d = X - mu
        np.testing.assert_allclose(covs[k], (resp[:, k, None] * d).T @ d / nk[k] + 1e-6 * np.eye(3), rtol=1e-11)
    # the other types are reductions of the full covariances
    full = (covs - 1e-6 * np.eye(3))
    _, _, tied = m_step(X, resp, 0.0, "tied")
    np.testing.assert_allclose(tied, np.einsum("k,kij->ij", nk, full) / len(X), rtol=1e-11)
    _, _, diag = m_step(X, resp, 0.0, "diag")
    np.testing.assert_allclose(diag, np.diagonal(full, axis1=1, axis2=2), rtol=1e-11)
    _, _, sph = m_step(X, resp, 0.0, "spherical")
    np.testing.assert_allclose(sph, diag.mean(axis=1), rtol=1e-11)


def test_m_step_is_centred_far_from_the_origin():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 2)) * 1e-3 + 1e6  # naive E[x^2] - E[x]^2 would be all cancellation
    resp = np.ones((500, 1))
    for ct in TYPES:
        _, _, cov = m_step(X, resp, 0.0, ct)
        want = np.cov(X.T, bias=True)
        want = {"full": want[None], "tied": want, "diag": np.diag(want)[None],
                "spherical": np.diag(want).mean()[None]}[ct]
        np.testing.assert_allclose(cov, want, rtol=1e-6)


@pytest.mark.parametrize("ct", TYPES)
def test_precision_cholesky_helpers(ct):
    rng = np.random.default_rng(1)
    X = _blobs(rng, N=100, D=3, K=2)
    cov = m_step(X, rng.dirichlet(np.ones(2), size=100), 1e-6, ct)[2]
    U = precision_cholesky(cov, ct)
    P = precisions_from_cholesky(U, ct)
    if ct in ("full", "tied"):
        np.testing.assert_array_equal(np.tril(U, -1), 0)
        np.testing.assert_allclose(P @ cov, np.broadcast_to(np.eye(3), P.shape), atol=1e-10)
    else:
        np.testing.assert_allclose(P * cov, 1.0, rtol=1e-12)
    np.testing.assert_allclose(precision_cholesky_from_precisions(P, ct), U, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- densities and sampling
@pytest.mark.parametrize("ct", TYPES)
def test_score_samples_is_the_scipy_mixture_density(ct):
    rng = np.random.default_rng(4)
    X = _blobs(rng, N=150, D=3, K=3)
    gm = GaussianMixture(3, covariance_type=ct, rng=0).fit(X)
    Y = rng.normal(scale=3.0, size=(40, 3))
    comp = np.stack([multivariate_normal(gm.means_[k], c).logpdf(Y)
                     for k, c in enumerate(_full_covariances(gm))], axis=1)
    want = logsumexp(comp + np.log(gm.weights_), axis=1)  # [eq:gmm-loglik]
    np.testing.assert_allclose(gm.score_samples(Y), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.score(Y), want.mean(), rtol=1e-10)


@pytest.mark.parametrize("ct", TYPES)
def test_sample_shapes_reproducibility_and_moments(ct):
    rng = np.random.default_rng(8)
    X = _blobs(rng, N=200, D=2, K=2)
    gm = GaussianMixture(2, covariance_type=ct, rng=0).fit(X)
    a, la = gm.sample(5, rng=3)
    b, lb = gm.sample(5, rng=np.random.default_rng(3))
    c, _ = gm.sample(5, rng=4)
    assert a.shape == (5, 2) and la.shape == (5,) and la.dtype == np.int64 and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    # moments of a large sample: within 5 standard errors of the mixture mean
    S, labels = gm.sample(20000, rng=0)
    assert np.all(np.bincount(labels, minlength=2) >= 0) and set(labels) <= {0, 1}
    mean = gm.weights_ @ gm.means_
    covs = _full_covariances(gm)
    total = np.einsum("k,kij->ij", gm.weights_, covs + np.einsum("ki,kj->kij", gm.means_ - mean, gm.means_ - mean))
    se = np.sqrt(np.diag(total) / len(S))
    assert np.all(np.abs(S.mean(axis=0) - mean) < 5 * se)
    for k in range(2):  # each row's label is its component
        rows = S[labels == k]
        if len(rows) > 100:
            assert np.all(np.abs(rows.mean(axis=0) - gm.means_[k]) < 5 * np.sqrt(np.diag(covs[k]) / len(rows)))


def test_float32_is_kept():
    rng = np.random.default_rng(0)
    X = _blobs(rng).astype(np.float32)
    gm = GaussianMixture(3, rng=0).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert getattr(gm, name).dtype == np.float32, name
    assert gm.score_samples(X).dtype == np.float32 and gm.sample(3, rng=0)[0].dtype == np.float32
    gm64 = GaussianMixture(3, rng=0).fit(X.astype(np.float64))
    np.testing.assert_allclose(gm.score(X), gm64.score(X), rtol=1e-4)


def test_reproducible_from_seed_and_n_init():
    rng = np.random.default_rng(2)
    X = _blobs(rng)
    a = GaussianMixture(3, rng=7, init_params="random").fit(X)
    b = GaussianMixture(3, rng=7, init_params="random").fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    best = GaussianMixture(3, rng=7, n_init=4, init_params="random").fit(X)
    assert best.lower_bound_ >= a.lower_bound_ - 1e-12  # the first of the 4 runs is a's


def test_kmeans_plusplus_indices():
    rng = np.random.default_rng(0)
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]), 4, axis=0)
    centres, idx = kmeans_plusplus(X, 5, rng)  # more centres than distinct points
    assert len(set(idx.tolist())) == 5
    np.testing.assert_array_equal(centres, X[idx])
    assert {tuple(c) for c in centres} == {tuple(r) for r in X}  # all 3 distinct points get a centre


# ----------------------------------------------------------------------------- information criteria
def test_bic_aic_match_sklearn_for_every_type():
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    rng = np.random.default_rng(12)
    X = _blobs(rng, N=120, D=3, K=2)
    for ct in TYPES:
        gm = GaussianMixture(2, covariance_type=ct, rng=0).fit(X)
        sk = SkGaussianMixture(2, covariance_type=ct)
        sk.weights_, sk.means_, sk.covariances_ = gm.weights_, gm.means_, gm.covariances_
        sk.precisions_cholesky_ = gm.precisions_cholesky_
        sk.n_features_in_ = 3
        np.testing.assert_allclose(gm.bic(X), sk.bic(X), rtol=1e-12)
        np.testing.assert_allclose(gm.aic(X), sk.aic(X), rtol=1e-12)


# ----------------------------------------------------------------------------- bad input
def test_constructor_does_no_work_and_fit_checks():
    X = np.random.default_rng(0).normal(size=(20, 2))
    for kwargs, err, match in [
        (dict(n_components=0), ValueError, "n_components"),
        (dict(n_components=2.5), TypeError, "n_components"),
        (dict(covariance_type="banana"), ValueError, "covariance_type"),
        (dict(init_params="kmeans"), ValueError, "init_params"),
        (dict(reg_covar=-1.0), ValueError, "reg_covar"),
        (dict(tol=-1.0), ValueError, "tol"),
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(n_init=0), ValueError, "n_init"),
        (dict(rng="seed"), TypeError, "rng"),
        (dict(n_components=2, weights_init=[0.3, 0.3]), ValueError, "sum to 1"),
        (dict(n_components=2, weights_init=[0.5, 0.5, 0.0]), ValueError, "weights_init must have shape"),
        (dict(n_components=2, means_init=np.zeros((2, 3))), ValueError, "means_init must have shape"),
        (dict(n_components=2, precisions_init=-np.ones((2, 2, 2))), ValueError, "symmetric positive definite"),
        (dict(n_components=2, covariance_type="diag", precisions_init=np.zeros((2, 2))), ValueError, "positive"),
    ]:
        gm = GaussianMixture(**kwargs)  # never raises: no work in __init__
        with pytest.raises(err, match=match):
            gm.fit(X)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), "NaN"),
        (np.arange(5.0), "2-D"),
        (np.zeros((1, 2)), "at least 2 row"),
        (np.zeros((0, 2)), "at least 2 row"),
    ],
)
def test_bad_X(X, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(1).fit(X)


def test_fewer_samples_than_components():
    with pytest.raises(ValueError, match="at most n_components=3"):
        GaussianMixture(4).fit(np.random.default_rng(0).normal(size=(3, 2)))


def test_unfitted_and_wrong_features():
    gm = GaussianMixture(2)
    with pytest.raises(NotFittedError, match="fit"):
        gm.predict(np.zeros((3, 2)))
    with pytest.raises(NotFittedError):
        gm.sample(3)
    gm.fit(np.random.default_rng(0).normal(size=(30, 2)))
    with pytest.raises(ValueError, match="2 features"):
        gm.score_samples(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


def test_convergence_flag_and_warning():
    X = _blobs(np.random.default_rng(3))
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        gm = GaussianMixture(3, tol=0.0, max_iter=2, rng=0).fit(X)
    assert not gm.converged_ and gm.n_iter_ == 2
    gm = GaussianMixture(3, tol=1e-3, rng=0, progress=True).fit(X)  # progress is silent off a TTY
    assert gm.converged_ and gm.n_iter_ < 100


# ----------------------------------------------------------------------------- degenerate data
def _assert_finite_fit(gm, X):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        assert np.all(np.isfinite(getattr(gm, name))), name
    assert np.all(np.isfinite(gm.score_samples(X)))
    assert np.all(np.isfinite(gm.predict_proba(X)))


@pytest.mark.parametrize("ct", TYPES)
@pytest.mark.parametrize("init", ["kmeans++", "random", "random_from_data"])
def test_degenerate_data_fits_thanks_to_reg_covar(ct, init):
    rng = np.random.default_rng(6)
    normal = rng.normal(size=(40, 3))
    cases = {
        "duplicated points": np.repeat(rng.normal(size=(4, 3)), 10, axis=0),
        "collapsed cluster": np.vstack([normal, np.tile([[8.0, 8.0, 8.0]], (20, 1))]),
        "constant feature": np.column_stack([normal[:, :2], np.full(40, 3.0)]),
        "K > distinct points": np.repeat(rng.normal(size=(2, 3)), 3, axis=0),
        "all points equal": np.ones((6, 3)),
    }
    for _name, X in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(4, covariance_type=ct, init_params=init, rng=0, max_iter=30).fit(X)
        _assert_finite_fit(gm, X)


def test_degenerate_data_without_regularisation_says_what_to_change():
    X = np.repeat(np.random.default_rng(0).normal(size=(2, 3)), 5, axis=0)
    for ct in TYPES:
        with pytest.raises(ValueError, match="(?i)increase reg_covar"):
            GaussianMixture(3, covariance_type=ct, reg_covar=0.0, rng=0).fit(X)
    with pytest.raises(ValueError, match="not positive definite"):
        precision_cholesky(np.zeros((1, 2, 2)), "full")
