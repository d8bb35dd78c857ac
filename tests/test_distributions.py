"""Gaussian log-densities and MLE, Bernoulli/categorical log-probabilities, NLL units.

Oracles: scipy.stats densities, torch.distributions in float64, closed forms,
central finite differences.
"""
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from probgen.distributions.discrete import bernoulli_log_prob, categorical_log_prob
from probgen.distributions.gaussian import fit_gaussian, gaussian_log_prob, gaussian_log_prob_diag
from probgen.distributions.nll import bits_per_dim, nll_nats


def _random_spd(rng, D, jitter=0.5):
    A = rng.normal(size=(D, D))
    return A @ A.T / D + jitter * np.eye(D)


def _loglik(X, mean, cov):
    return float(np.sum(gaussian_log_prob(X, mean, cov)))


# ---------------------------------------------------------------- Gaussian log-density

@given(seed=st.integers(0, 2**32 - 1), D=st.integers(1, 6), N=st.integers(1, 8))
def test_gaussian_log_prob_equals_scipy(seed, D, N):
    rng = np.random.default_rng(seed)
    mean, cov = rng.normal(size=D), _random_spd(rng, D)
    X = mean + 2.0 * rng.normal(size=(N, D))
    ours = gaussian_log_prob(X, mean, cov)
    ref = np.atleast_1d(scipy.stats.multivariate_normal(mean, cov).logpdf(X))
    assert ours.shape == (N,) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


@given(seed=st.integers(0, 2**32 - 1), D=st.integers(1, 6))
def test_gaussian_log_prob_diag_equals_scipy_and_full(seed, D):
    rng = np.random.default_rng(seed)
    mean, var = rng.normal(size=D), rng.uniform(0.1, 3.0, size=D)
    X = rng.normal(size=(5, D))
    ours = gaussian_log_prob_diag(X, mean, var)
    ref = scipy.stats.norm(mean, np.sqrt(var)).logpdf(X).sum(axis=1)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, gaussian_log_prob(X, mean, np.diag(var)), rtol=1e-12, atol=1e-12)


def test_gaussian_log_prob_keeps_float32():
    rng = np.random.default_rng(0)
    mean, cov = rng.normal(size=3), _random_spd(rng, 3)
    X = rng.normal(size=(10, 3))
    out32 = gaussian_log_prob(X.astype(np.float32), mean.astype(np.float32), cov.astype(np.float32))
    out64 = gaussian_log_prob(X, mean, cov)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5)
    # one float64 input promotes to float64
    assert gaussian_log_prob(X.astype(np.float32), mean, cov).dtype == np.float64
    d32 = gaussian_log_prob_diag(X.astype(np.float32), mean.astype(np.float32), np.ones(3, np.float32))
    assert d32.dtype == np.float32


# ---------------------------------------------------------------- Gaussian MLE

def test_fit_gaussian_equals_sample_mean_and_biased_covariance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4)) + 3.0
    mean, cov = fit_gaussian(X)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(cov, np.cov(X, rowvar=False, bias=True), rtol=1e-12, atol=1e-13)
    assert np.array_equal(cov, cov.T)
    mean_r, cov_r = fit_gaussian(X, reg_covar=0.25)
    np.testing.assert_allclose(cov_r, cov + 0.25 * np.eye(4), rtol=1e-14)
    np.testing.assert_array_equal(mean_r, mean)


def test_loglik_at_mle_has_closed_form():
    # [eq:gauss-loglik-mle]: sum_n log N(x_n | mu, Sigma) = -N/2 (D log 2pi + log|Sigma| + D)
    rng = np.random.default_rng(2)
    N, D = 300, 5
    X = rng.normal(size=(N, D)) @ rng.normal(size=(D, D))
    mean, cov = fit_gaussian(X)
    expected = -0.5 * N * (D * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + D)
    np.testing.assert_allclose(_loglik(X, mean, cov), expected, rtol=1e-12)


def _analytic_grads(X, mean, cov):
    """[eq:gauss-grad-mean], [eq:gauss-grad-cov] written out independently of the library."""
    N = X.shape[0]
    P = np.linalg.inv(cov)
    R = X - mean
    S = R.T @ R
    g_mean = P @ R.sum(axis=0)
    g_cov = -0.5 * N * P + 0.5 * P @ S @ P
    return g_mean, g_cov


def test_mle_gradient_is_zero_analytic_and_finite_difference():
    rng = np.random.default_rng(3)
    N, D = 100, 3
    X = rng.normal(size=(N, D)) @ rng.normal(size=(D, D)) + rng.normal(size=D)
    mean, cov = fit_gaussian(X)

    # the analytic gradient formulas are right: compare them with central differences
    # at a point that is NOT the MLE (there the gradient is far from zero)
    m0, c0 = mean + 0.3, cov * 1.4 + 0.1 * np.eye(D)
    gm, gc = _analytic_grads(X, m0, c0)
    h = 1e-5
    L = np.linalg.cholesky(cov)
    for _ in range(5):
        dm = rng.normal(size=D)
        E = rng.normal(size=(D, D))
        dc = L @ (E + E.T) @ L.T / 2  # directions on the scale of cov keep the O(h^2) error small
        fd_m = (_loglik(X, m0 + h * dm, c0) - _loglik(X, m0 - h * dm, c0)) / (2 * h)
        fd_c = (_loglik(X, m0, c0 + h * dc) - _loglik(X, m0, c0 - h * dc)) / (2 * h)
        np.testing.assert_allclose(fd_m, gm @ dm, rtol=1e-6)
        np.testing.assert_allclose(fd_c, np.sum(gc * dc), rtol=1e-6)
        assert abs(gm @ dm) > 1.0  # the check above is not vacuous

    # at the MLE the analytic gradient vanishes (relative to its size away from the MLE)
    gm_hat, gc_hat = _analytic_grads(X, mean, cov)
    assert np.max(np.abs(gm_hat)) < 1e-10 * np.max(np.abs(gm))
    assert np.max(np.abs(gc_hat)) < 1e-10 * np.max(np.abs(gc))
    # and so do central-difference directional derivatives of the library's log-likelihood
    for _ in range(5):
        dm = rng.normal(size=D)
        E = rng.normal(size=(D, D))
        dc = L @ (E + E.T) @ L.T / 2
        fd_m = (_loglik(X, mean + h * dm, cov) - _loglik(X, mean - h * dm, cov)) / (2 * h)
        fd_c = (_loglik(X, mean, cov + h * dc) - _loglik(X, mean, cov - h * dc)) / (2 * h)
        # central differences: rounding |loglik| * eps / h ~ 1e3 * 2e-16 / 1e-5 = 2e-8, plus O(h^2)
        assert abs(fd_m) < 1e-6 and abs(fd_c) < 1e-6
        assert abs(np.sum(gc * dc)) > 1.0  # away from the MLE the same direction has a slope


@given(seed=st.integers(0, 2**32 - 1), D=st.integers(1, 4), scale=st.floats(1e-2, 0.5))
def test_perturbing_the_mle_never_increases_loglik(seed, D, scale):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, D)) @ _random_spd(rng, D) + rng.normal(size=D)
    mean, cov = fit_gaussian(X)
    best = _loglik(X, mean, cov)
    sd = np.sqrt(np.diag(cov))
    for _ in range(10):
        dm = scale * sd * rng.normal(size=D)
        E = rng.normal(size=(D, D))
        # symmetric perturbation that keeps SPD: cov' = A cov A^T with A = I + scale*E
        A = np.eye(D) + scale * (E + E.T) / 4
        assert _loglik(X, mean + dm, cov) < best
        assert _loglik(X, mean, A @ cov @ A.T) < best
        assert _loglik(X, mean + dm, A @ cov @ A.T) < best


def test_large_offset_float64_variance_by_centring():
    rng = np.random.default_rng(4)
    noise = rng.normal(size=(1000, 2))
    X = 1e8 + noise
    exact = np.cov(X - 1e8, rowvar=False, bias=True)  # X - 1e8 is exact (Sterbenz)
    _, cov = fit_gaussian(X)
    np.testing.assert_allclose(cov, exact, rtol=1e-9, atol=1e-9)
    # the naive E[x^2] - E[x]^2 fails on the same data: the test can tell the difference
    naive = np.mean(X[:, 0] ** 2) - np.mean(X[:, 0]) ** 2
    assert abs(naive - exact[0, 0]) > 0.1 * exact[0, 0]


def test_large_offset_float32_variance_by_centring():
    rng = np.random.default_rng(5)
    # spacing of float32 at 1e8 is 8: noise of scale 100 survives storage
    X = (1e8 + 100.0 * rng.normal(size=(10000, 2))).astype(np.float32)
    exact = np.cov(X.astype(np.float64) - 1e8, rowvar=False, bias=True)
    mean, cov = fit_gaussian(X)
    assert mean.dtype == np.float32 and cov.dtype == np.float32
    # float32 accumulation of N = 1e4 products: relative error bound N * u = 6e-4
    np.testing.assert_allclose(np.diag(cov), np.diag(exact), rtol=1e-3)
    naive = np.mean(X[:, 0] ** 2) - np.mean(X[:, 0]) ** 2
    assert abs(naive - exact[0, 0]) > 0.1 * exact[0, 0]


# ---------------------------------------------------------------- bad input

def test_gaussian_bad_input():
    rng = np.random.default_rng(6)
    X, mean, cov = rng.normal(size=(4, 2)), np.zeros(2), np.eye(2)
    Xn = X.copy()
    Xn[1, 1] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        gaussian_log_prob(Xn, mean, cov)
    with pytest.raises(ValueError, match="mean must have shape"):
        gaussian_log_prob(X, np.zeros(3), cov)
    with pytest.raises(ValueError, match="cov must have shape"):
        gaussian_log_prob(X, mean, np.eye(3))
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        gaussian_log_prob(X[0], mean, cov)
    with pytest.raises(ValueError, match="cov must be symmetric positive definite.*Cholesky"):
        gaussian_log_prob(X, mean, np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="cov must be symmetric positive definite.*not symmetric"):
        gaussian_log_prob(X, mean, np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="cov contains"):
        gaussian_log_prob(X, mean, np.array([[1.0, np.inf], [np.inf, 1.0]]))
    with pytest.raises(ValueError, match="var must be > 0"):
        gaussian_log_prob_diag(X, mean, np.array([1.0, 0.0]))
    with pytest.raises(TypeError, match="X must hold numbers"):
        fit_gaussian(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="X must have at least 1 row"):
        fit_gaussian(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="reg_covar must be >= 0"):
        fit_gaussian(X, reg_covar=-1.0)


# ---------------------------------------------------------------- Bernoulli / categorical

@given(logits=st.lists(st.floats(-60, 60), min_size=1, max_size=20), seed=st.integers(0, 1000))
def test_bernoulli_log_prob_equals_scipy(logits, seed):
    logits = np.array(logits)
    x = np.random.default_rng(seed).integers(0, 2, size=logits.shape)
    ours = bernoulli_log_prob(x, logits)
    # oracle 1: scipy's log_expit (accurate log sigma) for log p and log(1 - p) = log sigma(-l)
    ref = np.where(x == 1, scipy.special.log_expit(logits), scipy.special.log_expit(-logits))
    np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=1e-300)
    # oracle 2: scipy.stats.bernoulli where forming p = expit(l) loses nothing (|l| <= 5)
    ok = np.abs(logits) <= 5
    pmf = scipy.stats.bernoulli(scipy.special.expit(logits[ok])).logpmf(x[ok])
    np.testing.assert_allclose(ours[ok], pmf, rtol=1e-12, atol=1e-14)


def test_bernoulli_log_prob_extreme_logits_and_torch():
    from _require import require_torch

    torch = require_torch()
    logits = np.array([-1e4, -1e4, -40.0, -1.0, 0.0, 2.5, 40.0, 1e4, 1e4])
    x = np.array([0.0, 1.0, 1.0, 0.3, 1.0, 0.0, 0.0, 0.0, 1.0])
    ours = bernoulli_log_prob(x, logits)
    assert np.all(np.isfinite(ours))
    # closed forms at the extremes: log sigma(-1e4) = -1e4, log(1 - sigma(-1e4)) = 0 (to double)
    np.testing.assert_array_equal(ours[[0, 1, 7, 8]], [0.0, -1e4, -1e4, 0.0])
    ref = -torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(logits), torch.tensor(x), reduction="none"
    ).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-300)
    binary = x.copy()
    binary[3] = 1.0
    ref_dist = torch.distributions.Bernoulli(logits=torch.tensor(logits)).log_prob(torch.tensor(binary)).numpy()
    np.testing.assert_allclose(bernoulli_log_prob(binary, logits), ref_dist, rtol=1e-12, atol=1e-300)


def test_bernoulli_broadcast_dtype_and_bad_input():
    out = bernoulli_log_prob(np.ones((3, 4), np.float32), np.zeros(4, np.float32))
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.log(0.5), rtol=1e-6)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        bernoulli_log_prob([0.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="logits contains 1 NaN"):
        bernoulli_log_prob([0.0, 1.0], [0.0, np.nan])
    with pytest.raises(ValueError, match="must broadcast"):
        bernoulli_log_prob(np.zeros(3), np.zeros(4))


@given(seed=st.integers(0, 2**32 - 1), K=st.integers(1, 7), N=st.integers(1, 6), scale=st.floats(0.1, 50))
def test_categorical_log_prob_equals_log_softmax(seed, K, N, scale):
    rng = np.random.default_rng(seed)
    logits = scale * rng.normal(size=(N, K))
    labels = rng.integers(0, K, size=N)
    ours = categorical_log_prob(labels, logits)
    ref = scipy.special.log_softmax(logits, axis=1)[np.arange(N), labels]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert np.all(ours <= 0)


def test_categorical_log_prob_torch_extremes_and_bad_input():
    from _require import require_torch

    torch = require_torch()
    logits = np.array([[1e4, -1e4, 0.0], [3.0, 1.0, -2.0], [-1e4, -1e4, -1e4]])
    labels = np.array([1, 2, 0])
    ours = categorical_log_prob(labels, logits)
    assert np.all(np.isfinite(ours))
    ref = torch.distributions.Categorical(logits=torch.tensor(logits)).log_prob(torch.tensor(labels)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    np.testing.assert_allclose(ours[2], -np.log(3.0), rtol=1e-14)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        categorical_log_prob([0, 3, 1], logits)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        categorical_log_prob([0.0, 1.0, 1.0], logits)
    with pytest.raises(ValueError, match="labels shape"):
        categorical_log_prob([0, 1], logits)


# ---------------------------------------------------------------- NLL units

def test_nll_nats_and_bits_per_dim():
    D = 784
    # a fair coin per pixel: log p(x) = -D ln 2 for every image -> 1 bit per dimension
    log_probs = bernoulli_log_prob(np.random.default_rng(7).integers(0, 2, (5, D)), np.zeros((5, D))).sum(1)
    np.testing.assert_allclose(nll_nats(log_probs), D * np.log(2), rtol=1e-14)
    np.testing.assert_allclose(bits_per_dim(log_probs, D), 1.0, rtol=1e-14)
    assert isinstance(nll_nats([-1.0, -3.0]), float) and nll_nats([-1.0, -3.0]) == 2.0
    with pytest.raises(ValueError, match="log_probs must have at least 1 row"):
        nll_nats([])
    with pytest.raises(ValueError, match="log_probs contains"):
        nll_nats([np.nan])
    with pytest.raises(ValueError, match="D must be >= 1"):
        bits_per_dim([-1.0], 0)
