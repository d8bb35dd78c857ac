"""The responsibilities kernels (probgen.kernels.responsibilities) against their NumPy twins and
independent oracles (scipy's logsumexp and multivariate normal density)."""
import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import solve_triangular
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from probgen.kernels import (
    mixture_log_prob_reference,
    mixture_responsibilities,
    mixture_responsibilities_reference,
    normalize_log_prob,
    normalize_log_prob_reference,
    weighted_diag_scatter,
    weighted_diag_scatter_reference,
)

TYPES = ("full", "tied", "diag", "spherical")


def _random_params(rng, K, D, covariance_type):
    """Log-weights, means and upper Cholesky factors of precisions, from random SPD covariances."""
    log_w = np.log(rng.dirichlet(np.ones(K)))
    means = rng.normal(scale=2.0, size=(K, D))
    A = rng.normal(size=(K, D, D)) / np.sqrt(D) + np.eye(D)
    cov = A @ A.transpose(0, 2, 1) + 0.1 * np.eye(D)
    eye = np.eye(D)
    U = np.stack([solve_triangular(np.linalg.cholesky(c), eye, lower=True).T for c in cov])
    if covariance_type == "full":
        pc = U
    elif covariance_type == "tied":
        pc = U[0]
    elif covariance_type == "diag":
        pc = rng.uniform(0.3, 2.0, size=(K, D))
    else:
        pc = rng.uniform(0.3, 2.0, size=K)
    return log_w, means, pc


def _covariances_from(pc, covariance_type, K, D):
    if covariance_type == "full":
        return np.stack([np.linalg.inv(u @ u.T) for u in pc])
    if covariance_type == "tied":
        return np.broadcast_to(np.linalg.inv(pc @ pc.T), (K, D, D))
    if covariance_type == "diag":
        return np.stack([np.diag(1 / p**2) for p in pc])
    return np.stack([np.eye(D) / p**2 for p in pc])


# ----------------------------------------------------------------------------- exp
def test_vectorised_exp_is_within_one_ulp_of_numpy():
    from probgen.kernels.responsibilities import _exp_nonpositive

    rng = np.random.default_rng(0)
    x = -np.concatenate([np.linspace(0.0, 708.0, 200_001), rng.exponential(5.0, 100_000),
                         [0.0, 5e-324, 1e-300, 1e-17, 0.5 * np.log(2)]])
    y = x.copy()
    _exp_nonpositive(y, np.empty_like(y))
    ref = np.exp(x)
    assert np.max(np.abs(y - ref) / np.spacing(ref)) <= 1.0
    z = np.array([-np.inf, -708.5, -745.2, -1e300])  # exp < 3.3e-308 is flushed to 0
    _exp_nonpositive(z, np.empty(4))
    assert np.all(z == 0.0)


# ----------------------------------------------------------------------------- normalize_log_prob
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 700), K=st.integers(1, 20),
       log=st.booleans(), scale=st.sampled_from([1.0, 30.0, 1e3]))
def test_normalize_matches_reference_and_scipy(seed, N, K, log, scale):
    rng = np.random.default_rng(seed)
    lp = rng.normal(scale=scale, size=(N, K))
    lp[rng.uniform(size=(N, K)) < 0.1] = -np.inf  # zero-probability entries
    lp[:, 0] = rng.normal(size=N)  # every row keeps a finite entry
    out, log_norm = normalize_log_prob(lp, log=log)
    ref, ref_norm = normalize_log_prob_reference(lp, log=log)
    np.testing.assert_allclose(log_norm, logsumexp(lp, axis=1), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(log_norm, ref_norm, rtol=1e-13, atol=1e-13)
    if log:
        finite = np.isfinite(ref)
        assert np.array_equal(finite, np.isfinite(out))
        np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-12, atol=1e-12)
        # log-responsibilities of size |x| carry an absolute rounding error ~ eps |x|
        scale = np.abs(np.where(finite, out, 0.0)).max()
        np.testing.assert_allclose(logsumexp(out, axis=1), 0.0, atol=1e-15 * K * max(1.0, scale))
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-13)
        assert np.all(out >= 0)


def test_normalize_keeps_float32_and_does_not_overflow():
    lp = np.array([[1000.0, 999.0, -1000.0], [-1e4, -1e4 - 1, -np.inf]], dtype=np.float32)
    out, log_norm = normalize_log_prob(lp)
    assert out.dtype == np.float32 and log_norm.dtype == np.float32
    np.testing.assert_allclose(log_norm, logsumexp(lp.astype(np.float64), axis=1), rtol=1e-6)
    np.testing.assert_allclose(out[:, 2], 0.0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0.0, np.nan]]), "NaN or \\+inf"),
        (np.array([[0.0, np.inf]]), "NaN or \\+inf"),
        (np.array([[0.0, 1.0], [-np.inf, -np.inf]]), "row\\(s\\) \\[1\\]"),
        (np.zeros(3), "2-D"),
        (np.zeros((3, 0)), "at least one column"),
    ],
)
def test_normalize_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        normalize_log_prob(bad)


def test_normalize_rejects_non_numeric():
    with pytest.raises(TypeError):
        normalize_log_prob([["a", "b"]])


# ----------------------------------------------------------------------------- fused E-step
def test_log_prob_reference_is_the_gaussian_density():
    """The twin itself against scipy.stats.multivariate_normal, for every covariance type."""
    rng = np.random.default_rng(3)
    K, D = 3, 4
    X = rng.normal(size=(50, D))
    for ct in TYPES:
        _, means, pc = _random_params(rng, K, D, ct)
        covs = _covariances_from(pc, ct, K, D)
        want = np.stack([multivariate_normal(means[k], covs[k]).logpdf(X) for k in range(K)], axis=1)
        np.testing.assert_allclose(mixture_log_prob_reference(X, means, pc, ct), want, rtol=1e-11, atol=1e-11)


@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 600), D=st.integers(1, 9),
       K=st.integers(1, 6), ct=st.sampled_from(TYPES), log=st.booleans())
def test_estep_kernel_matches_reference(seed, N, D, K, ct, log):
    rng = np.random.default_rng(seed)
    log_w, means, pc = _random_params(rng, K, D, ct)
    X = rng.normal(scale=2.0, size=(N, D))
    out, log_norm = mixture_responsibilities(X, log_w, means, pc, ct, log=log)
    ref, ref_norm = mixture_responsibilities_reference(X, log_w, means, pc, ct, log=log)
    np.testing.assert_allclose(log_norm, ref_norm, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12 if not log else 1e-9)
    resp = np.exp(out) if log else out
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("ct", TYPES)
def test_estep_kernel_float32(ct):
    rng = np.random.default_rng(7)
    K, D = 4, 5
    log_w, means, pc = _random_params(rng, K, D, ct)
    X = rng.normal(size=(300, D))
    out, log_norm = mixture_responsibilities(X.astype(np.float32), log_w, means, pc, ct)
    assert out.dtype == np.float32 and log_norm.dtype == np.float32
    ref, ref_norm = mixture_responsibilities_reference(X, log_w, means, pc, ct)
    np.testing.assert_allclose(log_norm, ref_norm, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_estep_kernel_independent_of_thread_count_and_block_edges():
    rng = np.random.default_rng(11)
    log_w, means, pc = _random_params(rng, 5, 6, "full")
    X = rng.normal(size=(1031, 6))  # several 256-row blocks and a ragged last one
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = mixture_responsibilities(X, log_w, means, pc, "full")
    finally:
        numba.set_num_threads(threads)
    many = mixture_responsibilities(X, log_w, means, pc, "full")
    assert np.array_equal(one[0], many[0]) and np.array_equal(one[1], many[1])
    # each row depends on that row alone
    part = mixture_responsibilities(X[255:258], log_w, means, pc, "full")
    assert np.array_equal(part[0], many[0][255:258])


def test_estep_zero_weight_component_gets_zero_responsibility():
    rng = np.random.default_rng(2)
    log_w, means, pc = _random_params(rng, 3, 2, "diag")
    log_w = np.log(np.array([0.5, 0.0, 0.5]))
    resp, log_norm = mixture_responsibilities(rng.normal(size=(20, 2)), log_w, means, pc, "diag")
    assert np.all(resp[:, 1] == 0) and np.all(np.isfinite(log_norm))


def test_estep_sample_with_probability_zero_is_an_error():
    rng = np.random.default_rng(2)
    log_w, means, pc = _random_params(rng, 2, 2, "full")
    X = np.array([[0.0, 0.0], [1e200, 1e200]])  # squared Mahalanobis distance overflows
    with pytest.raises(ValueError, match="probability 0"):
        mixture_responsibilities(X, log_w, means, pc, "full")


def test_estep_bad_parameters():
    rng = np.random.default_rng(0)
    log_w, means, pc = _random_params(rng, 2, 3, "full")
    X = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="upper triangular"):
        mixture_responsibilities(X, log_w, means, np.swapaxes(pc, 1, 2), "full")
    with pytest.raises(ValueError, match="prec_chol must be a 3-D"):
        mixture_responsibilities(X, log_w, means, pc[0], "full")
    with pytest.raises(ValueError, match="must be positive"):
        mixture_responsibilities(X, log_w, means, -np.ones(2), "spherical")
    with pytest.raises(ValueError, match="log_weights must have shape"):
        mixture_responsibilities(X, log_w[:1], means, pc, "full")
    with pytest.raises(ValueError, match="3 features"):
        mixture_responsibilities(X[:, :2], log_w, means, pc, "full")
    with pytest.raises(ValueError, match="covariance_type"):
        mixture_responsibilities(X, log_w, means, pc, "banana")
    with pytest.raises(ValueError, match="NaN"):
        mixture_responsibilities(np.full((2, 3), np.nan), log_w, means, pc, "full")


# ----------------------------------------------------------------------------- M-step scatter
@pytest.mark.parametrize("N", [1, 37, 4096, 9000])
def test_diag_scatter_matches_reference(N):
    rng = np.random.default_rng(N)
    X = rng.normal(loc=50.0, size=(N, 7))
    resp = rng.dirichlet(np.ones(4), size=N)
    means = resp.T @ X / resp.sum(axis=0)[:, None]
    got = weighted_diag_scatter(X, resp, means)
    np.testing.assert_allclose(got, weighted_diag_scatter_reference(X, resp, means), rtol=1e-11, atol=1e-11)


def test_diag_scatter_checks_shapes():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="resp must have 4 rows"):
        weighted_diag_scatter(X, np.ones((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="means must have 2 rows"):
        weighted_diag_scatter(X, np.ones((4, 2)), np.zeros((3, 2)))
