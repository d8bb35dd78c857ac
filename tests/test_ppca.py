"""Probabilistic PCA: closed form against scikit-learn and the eigen-decomposition, EM against the closed
form, likelihood/posterior against scipy and the Gaussian conditioning formulas, sampling statistics."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA

from probgen._validation import NotFittedError
from probgen.linear_latent import (
    PPCA,
    ppca_closed_form,
    ppca_em_step,
    ppca_log_likelihood,
    ppca_posterior,
    sample_covariance,
)


def _data(N, D, M, seed, signal=(5.0, 3.0), offset=2.0):
    """Rows with M signal directions of variance ``signal`` (cycled) over unit noise: a clear eigen-gap."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((D, M)))
    scales = np.sqrt(np.resize(np.asarray(signal), M))
    X = (rng.standard_normal((N, M)) * scales) @ Q.T + rng.standard_normal((N, D)) + offset
    return X


def _loglik(X, mean, W, sigma2):
    return multivariate_normal(mean, W @ W.T + sigma2 * np.eye(len(mean))).logpdf(X)


# ----------------------------------------------------------------------------- closed form
@pytest.mark.parametrize("N, D, M", [(300, 12, 3), (2000, 30, 5)])
def test_closed_form_matches_sklearn_pca(N, D, M):
    X = _data(N, D, M, seed=N)
    model = PPCA(M).fit(X)
    pca = PCA(n_components=M, svd_solver="full").fit(X)
    # scikit-learn uses the unbiased 1/(N-1) covariance; PPCA's maximum likelihood uses 1/N
    c = N / (N - 1)
    np.testing.assert_allclose(model.mean_, pca.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.noise_variance_ * c, pca.noise_variance_, rtol=1e-10)
    np.testing.assert_allclose(model.covariance() * c, pca.get_covariance(), rtol=1e-9, atol=1e-10)
    assert model.W_.shape == (D, M) and model.n_iter_ == 0 and model.converged_ and model.lower_bounds_ is None


@pytest.mark.parametrize("N, D, M", [(400, 9, 3), (8, 20, 3)])  # eigh route (N >= D) and SVD route (N < D)
def test_closed_form_is_the_eigen_solution(N, D, M):
    # (for N < D scikit-learn's noise_variance_ averages only the min(N, D) - M computed eigenvalues;
    #  the maximum-likelihood sigma^2 averages all D - M discarded ones, zeros included)
    X = _data(N, D, M, seed=1)
    S = np.cov(X.T, bias=True)
    lam, U = np.linalg.eigh(S)
    lam, U = lam[::-1], U[:, ::-1]
    mean, W, sigma2 = ppca_closed_form(X, M)
    assert sigma2 == pytest.approx(lam[M:].mean(), rel=1e-10)
    # columns are the top eigenvectors scaled by sqrt(lambda_i - sigma^2), up to sign
    np.testing.assert_allclose(np.abs(W), np.abs(U[:, :M]) * np.sqrt(lam[:M] - sigma2), atol=1e-10)
    # the stationarity condition S C^{-1} W = W  (Tipping & Bishop 1999, eq. 8)
    C = W @ W.T + sigma2 * np.eye(D)
    np.testing.assert_allclose(S @ np.linalg.solve(C, W), W, atol=1e-10)
    # the maximised mean log-likelihood  [eq:ppca-loglik-ml]
    ll_ml = -0.5 * (D * np.log(2 * np.pi) + np.sum(np.log(lam[:M])) + (D - M) * np.log(sigma2) + D)
    assert ppca_log_likelihood(X, mean, W, sigma2).mean() == pytest.approx(ll_ml, rel=1e-10)


@pytest.mark.parametrize("dtype, offset, rtol", [(np.float64, 1e6, 1e-7), (np.float32, 1e3, 2e-3)])
def test_closed_form_is_translation_invariant(dtype, offset, rtol):
    # a large offset sends the covariance through the exact (centred) path; the fit must not notice
    X = _data(3000, 10, 3, seed=16, offset=0.0)
    ref = PPCA(3).fit(X)
    shifted = PPCA(3).fit((X + offset).astype(dtype))
    np.testing.assert_allclose(shifted.covariance(), ref.covariance(), rtol=rtol, atol=rtol * np.abs(ref.covariance()).max())
    np.testing.assert_allclose(shifted.mean_, ref.mean_ + offset, rtol=rtol)


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-4, 1e-2, 0.3, 3.0]))
def test_closed_form_is_a_maximum(seed, scale):
    X = _data(200, 7, 2, seed=5)
    mean, W, sigma2 = ppca_closed_form(X, 2)
    best = ppca_log_likelihood(X, mean, W, sigma2).sum()
    rng = np.random.default_rng(seed)
    for _ in range(5):
        W_p = W + scale * rng.standard_normal(W.shape) * np.abs(W).max()
        s2_p = sigma2 * np.exp(scale * rng.standard_normal())
        mean_p = mean + scale * rng.standard_normal(mean.shape)
        assert ppca_log_likelihood(X, mean_p, W_p, s2_p).sum() <= best + 1e-9 * abs(best)


def test_closed_form_gradient_is_zero():
    # central differences of the total log-likelihood in every coordinate of W and in log sigma^2
    X = _data(150, 6, 2, seed=2)
    mean, W, sigma2 = ppca_closed_form(X, 2)
    f = lambda W_, s2_: ppca_log_likelihood(X, mean, W_, s2_).sum()  # noqa: E731
    h = 1e-5
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            E = np.zeros_like(W)
            E[i, j] = h
            assert abs(f(W + E, sigma2) - f(W - E, sigma2)) / (2 * h) < 1e-5
    assert abs(f(W, sigma2 * np.exp(h)) - f(W, sigma2 * np.exp(-h))) / (2 * h) < 1e-5


@pytest.mark.parametrize("method", ["closed_form", "em"])
def test_edge_cases_M_equals_1_and_D_minus_1(method):
    D = 5
    X = _data(500, D, 2, seed=3)
    lam = np.linalg.eigvalsh(np.cov(X.T, bias=True))[::-1]
    kw = dict(method=method, rng=0, tol=0, max_iter=3000) if method == "em" else {}
    m1 = PPCA(1, **kw).fit(X)
    assert m1.W_.shape == (D, 1)
    assert m1.noise_variance_ == pytest.approx(lam[1:].mean(), rel=1e-8)
    # W W^T = (lambda_1 - sigma^2) u_1 u_1^T: its trace
    assert np.sum(m1.W_**2) == pytest.approx(lam[0] - lam[1:].mean(), rel=1e-8)
    mD = PPCA(D - 1, **kw).fit(X)
    assert mD.W_.shape == (D, D - 1)
    assert mD.noise_variance_ == pytest.approx(lam[-1], rel=1e-8)
    # with M = D - 1 the model covariance reproduces the sample covariance exactly
    np.testing.assert_allclose(mD.covariance(), np.cov(X.T, bias=True), atol=1e-8)


# ----------------------------------------------------------------------------- EM
@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1), M=st.integers(1, 3))
def test_em_converges_to_closed_form(seed, M):
    X = _data(1000, 8, M, seed=seed % 7)
    cf = PPCA(M).fit(X)
    em = PPCA(M, method="em", tol=0, max_iter=400, rng=seed).fit(X)
    assert em.noise_variance_ == pytest.approx(cf.noise_variance_, rel=1e-6)
    np.testing.assert_allclose(em.W_ @ em.W_.T, cf.W_ @ cf.W_.T, rtol=0, atol=1e-6 * np.abs(cf.W_).max() ** 2)
    assert em.score(X) == pytest.approx(cf.score(X), rel=1e-6, abs=1e-6)
    assert em.score(X) <= cf.score(X) + 1e-12  # the closed form is the global maximum


def test_em_converges_with_tol_and_records_history():
    X = _data(500, 6, 2, seed=11)
    em = PPCA(2, method="em", tol=1e-10, rng=0).fit(X)
    assert em.converged_ and em.n_iter_ == len(em.lower_bounds_) < 1000
    assert em.score(X) == pytest.approx(PPCA(2).fit(X).score(X), rel=1e-8)


@settings(max_examples=20)
@given(
    seed=st.integers(0, 2**31 - 1),
    N=st.integers(4, 60),
    D=st.integers(3, 12),
    M=st.integers(1, 4),
)
def test_em_log_likelihood_never_decreases(seed, N, D, M):
    M = min(M, D - 1, N - 2)
    if M < 1:
        return
    X = np.random.default_rng(seed).standard_normal((N, D)) * np.linspace(0.5, 3.0, D)
    em = PPCA(M, method="em", tol=0, max_iter=40, rng=seed).fit(X)
    ll = np.asarray(em.lower_bounds_)
    assert np.all(np.diff(ll) >= -1e-10 * np.abs(ll[1:]))
    assert em.score(X) >= ll[-1] - 1e-10 * abs(ll[-1])  # the last M-step did not decrease it either


@pytest.mark.parametrize("N", [300, 7])  # S formed once (N >= D) and the data form (N < D)
def test_em_step_log_likelihood_is_the_model_log_likelihood(N):
    D, M = 10, 3
    rng = np.random.default_rng(N)
    X = rng.standard_normal((N, D)) + 1.0
    W, sigma2 = rng.standard_normal((D, M)), 0.7
    S = np.cov(X.T, bias=True)
    W_new, s2_new, ll = ppca_em_step(S @ W, np.trace(S), W, sigma2)
    assert ll == pytest.approx(_loglik(X, X.mean(0), W, sigma2).mean(), rel=1e-12)
    # the M-step against PRML (12.56)-(12.57) written per data point
    Xc = X - X.mean(0)
    Mmat = W.T @ W + sigma2 * np.eye(M)
    Ez = Xc @ W @ np.linalg.inv(Mmat)  # rows E[z_n]^T
    Ezz = N * sigma2 * np.linalg.inv(Mmat) + Ez.T @ Ez  # sum_n E[z_n z_n^T]
    W_ref = (Xc.T @ Ez) @ np.linalg.inv(Ezz)
    s2_ref = (np.sum(Xc**2) - 2 * np.sum((Ez @ W_ref.T) * Xc) + np.trace(Ezz @ W_ref.T @ W_ref)) / (N * D)
    np.testing.assert_allclose(W_new, W_ref, rtol=1e-10, atol=1e-12)
    assert s2_new == pytest.approx(s2_ref, rel=1e-10)


def test_em_with_fewer_rows_than_features():
    X = _data(9, 15, 2, seed=4)
    cf = PPCA(2).fit(X)
    em = PPCA(2, method="em", tol=0, max_iter=2000, rng=1).fit(X)
    assert em.score(X) == pytest.approx(cf.score(X), rel=1e-8)
    assert em.noise_variance_ == pytest.approx(cf.noise_variance_, rel=1e-6)


def test_em_is_reproducible_for_a_seed():
    X = _data(100, 6, 2, seed=0)
    a = PPCA(2, method="em", max_iter=5, tol=0, rng=3).fit(X)
    b = PPCA(2, method="em", max_iter=5, tol=0, rng=3).fit(X)
    c = PPCA(2, method="em", max_iter=5, tol=0, rng=4).fit(X)
    np.testing.assert_array_equal(a.W_, b.W_)
    assert not np.allclose(a.W_, c.W_)


def test_em_warns_when_not_converged():
    X = _data(100, 6, 2, seed=0)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        m = PPCA(2, method="em", max_iter=2, tol=1e-12, rng=0).fit(X)
    assert not m.converged_ and m.n_iter_ == 2


# ----------------------------------------------------------------------------- likelihood, posterior, sampling
@pytest.mark.parametrize("method", ["closed_form", "em"])
def test_score_samples_equals_scipy(method):
    X = _data(200, 7, 2, seed=6)
    model = PPCA(2, method=method, rng=0).fit(X)
    Xt = _data(50, 7, 2, seed=7)
    ref = multivariate_normal(model.mean_, model.covariance()).logpdf(Xt)
    np.testing.assert_allclose(model.score_samples(Xt), ref, rtol=1e-11)
    assert model.score(Xt) == pytest.approx(ref.mean(), rel=1e-11)


def test_log_likelihood_at_arbitrary_parameters_equals_scipy():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((3000, 9)) * 2  # more rows than one scoring block
    mean, W, sigma2 = rng.standard_normal(9), rng.standard_normal((9, 4)), 0.3
    np.testing.assert_allclose(ppca_log_likelihood(X, mean, W, sigma2), _loglik(X, mean, W, sigma2), rtol=1e-11)


def test_covariance_times_precision_is_identity():
    for method in ("closed_form", "em"):
        model = PPCA(3, method=method, rng=0).fit(_data(300, 10, 3, seed=9))
        np.testing.assert_allclose(model.covariance() @ model.precision(), np.eye(10), atol=1e-12)
        np.testing.assert_allclose(model.precision(), np.linalg.inv(model.covariance()), rtol=1e-9, atol=1e-12)


def test_posterior_matches_gaussian_conditioning():
    rng = np.random.default_rng(10)
    D, M = 6, 2
    mean, W, sigma2 = rng.standard_normal(D), rng.standard_normal((D, M)), 0.5
    X = rng.standard_normal((20, D))
    # joint of (z, x): cov(z) = I, cov(z, x) = W^T, cov(x) = C; condition z on x
    C = W @ W.T + sigma2 * np.eye(D)
    means_ref = (W.T @ np.linalg.solve(C, (X - mean).T)).T
    cov_ref = np.eye(M) - W.T @ np.linalg.solve(C, W)
    means, cov = ppca_posterior(X, mean, W, sigma2)
    np.testing.assert_allclose(means, means_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-10, atol=1e-12)
    model = PPCA(M).fit(_data(100, D, M, seed=1))
    np.testing.assert_allclose(model.transform(X), model.posterior(X)[0])


def test_sample_has_the_model_covariance():
    model = PPCA(2).fit(_data(300, 4, 2, seed=12))
    n = 40000
    Y = model.sample(n, rng=0)
    assert Y.shape == (n, 4) and Y.dtype == np.float64
    C = model.covariance()
    # mean: standard error sqrt(C_ii / n); covariance entry (known mean): sqrt((C_ii C_jj + C_ij^2) / n)
    z_mean = (Y.mean(0) - model.mean_) / np.sqrt(np.diag(C) / n)
    Yc = Y - model.mean_
    S = Yc.T @ Yc / n
    z_cov = (S - C) / np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / n)
    assert np.all(np.abs(z_mean) < 5) and np.all(np.abs(z_cov) < 5)
    np.testing.assert_array_equal(model.sample(3, rng=1), model.sample(3, rng=1))
    assert not np.allclose(model.sample(3, rng=1), model.sample(3, rng=2))


def test_float32_is_kept_end_to_end():
    # a strong signal makes EM slow, so it runs long enough for float32 rounding to show
    X = _data(2000, 30, 3, seed=13, signal=(60.0, 30.0, 15.0), offset=100.0).astype(np.float32)
    for method in ("closed_form", "em"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # EM iterates in float64: no spurious "decreased" warning
            m = PPCA(3, method=method, rng=0).fit(X)
        assert m.W_.dtype == m.mean_.dtype == np.float32
        for out in (m.score_samples(X), m.transform(X), m.posterior(X)[1], m.sample(4, rng=0),
                    m.covariance(), m.precision()):
            assert out.dtype == np.float32
        ref = PPCA(3).fit(X.astype(np.float64))
        assert m.score(X) == pytest.approx(ref.score(X), rel=1e-4)


@pytest.mark.parametrize("offset", [0.0, 3.0, 1e7])  # 1e7: the rank-1 shortcut would cancel, centring is used
def test_sample_covariance_matches_numpy(offset):
    X = _data(2500, 7, 2, seed=14, offset=0.0) + offset
    np.testing.assert_allclose(sample_covariance(X), np.cov(X.T, bias=True), rtol=1e-9, atol=1e-9)


def test_sample_covariance_float32_with_offset():
    X64 = _data(3000, 5, 2, seed=15, offset=0.0) + 300.0
    S = sample_covariance(X64.astype(np.float32))
    assert S.dtype == np.float32
    np.testing.assert_allclose(S, np.cov(X64.astype(np.float32).astype(np.float64).T, bias=True), atol=1e-3)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    X = _data(50, 5, 2, seed=0)
    with pytest.raises(ValueError, match="n_components=5 must be smaller"):
        PPCA(5).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        PPCA(0).fit(X)
    with pytest.raises(TypeError, match="n_components"):
        PPCA(2.5).fit(X)
    with pytest.raises(ValueError, match="method"):
        PPCA(2, method="svd").fit(X)
    with pytest.raises(ValueError, match="at least 2 row"):
        PPCA(1).fit(X[:1])
    with pytest.raises(ValueError, match="n_samples > n_components"):
        PPCA(3).fit(X[:4])
    with pytest.raises(ValueError, match="2-D"):
        PPCA(1).fit(X[0])
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PPCA(2).fit(Xn)
    for method in ("closed_form", "em"):
        with pytest.raises(ValueError, match="variance"):
            PPCA(2, method=method).fit(np.ones((20, 5)))
    # data exactly on a 2-D affine subspace: sigma^2 would be 0
    rng = np.random.default_rng(0)
    flat = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 5)) + 1.0
    with pytest.raises(ValueError, match="no variance outside"):
        PPCA(2).fit(flat)
    with pytest.raises(ValueError, match="max_iter"):
        PPCA(2, method="em", max_iter=0).fit(X)
    with pytest.raises(ValueError, match="tol"):
        PPCA(2, method="em", tol=-1.0).fit(X)
    with pytest.raises(TypeError, match="rng"):
        PPCA(2, method="em", rng="seed").fit(X)
    with pytest.raises(NotFittedError):
        PPCA(2).score_samples(X)
    with pytest.raises(NotFittedError):
        PPCA(2).sample(3)
    model = PPCA(2).fit(X)
    with pytest.raises(ValueError, match="5 features"):
        model.score_samples(X[:, :4])
    with pytest.raises(ValueError, match="n must be"):
        model.sample(0)
    with pytest.raises(ValueError, match="sigma2"):
        ppca_log_likelihood(X, model.mean_, model.W_, 0.0)
    with pytest.raises(ValueError, match="W must have shape"):
        ppca_log_likelihood(X, model.mean_, model.W_[:4], 1.0)
    with pytest.raises(ValueError, match="SW must have the shape"):
        ppca_em_step(model.W_[:4], 1.0, model.W_, 1.0)
    with pytest.raises(ValueError, match="sigma2"):
        ppca_em_step(model.W_, 1.0, model.W_, -1.0)
