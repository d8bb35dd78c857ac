"""KL divergences: properties (>= 0, zero on equal arguments), torch.distributions in
float64 to relative 1e-10, closed forms inside 5 standard errors of Monte Carlo."""
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st

from probgen.distributions.discrete import log_softmax
from probgen.distributions.kl import (
    kl_bernoulli,
    kl_categorical,
    kl_gaussian,
    kl_gaussian_diag,
    kl_monte_carlo,
    kl_normal_std,
)

SEEDS = st.integers(0, 2**32 - 1)


def _spd(rng, D, batch=()):
    A = rng.normal(size=batch + (D, D))
    return A @ np.swapaxes(A, -1, -2) / D + 0.3 * np.eye(D)


def _pair(seed, D, batch=()):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=batch + (D,)), _spd(rng, D, batch),
            rng.normal(size=batch + (D,)), _spd(rng, D, batch))


# ---------------------------------------------------------------- properties

@given(seed=SEEDS, D=st.integers(1, 5))
def test_kl_gaussian_nonnegative_and_zero_on_itself(seed, D):
    mp, Sp, mq, Sq = _pair(seed, D)
    assert kl_gaussian(mp, Sp, mq, Sq) >= 0
    assert kl_gaussian(mq, Sq, mp, Sp) >= 0
    assert abs(kl_gaussian(mp, Sp, mp, Sp)) <= 1e-13
    # nearby distributions: non-negative where the textbook form can round below zero
    assert kl_gaussian(mp, Sp, mp + 1e-9, Sp * (1 + 1e-12)) >= 0


@given(seed=SEEDS, D=st.integers(1, 6))
def test_kl_diag_and_std_normal_properties(seed, D):
    rng = np.random.default_rng(seed)
    m, v = rng.normal(size=(2, D)), rng.uniform(0.05, 4.0, size=(2, D))
    assert kl_gaussian_diag(m[0], v[0], m[1], v[1]) >= 0
    assert kl_gaussian_diag(m[0], v[0], m[0], v[0]) == 0
    assert kl_normal_std(m, np.log(v)).shape == (2,)
    assert np.all(kl_normal_std(m, np.log(v)) >= 0)
    assert kl_normal_std(np.zeros(D), np.zeros(D)) == 0
    np.testing.assert_allclose(kl_gaussian_diag(m[0], v[0], m[1], v[1]),
                               kl_gaussian(m[0], np.diag(v[0]), m[1], np.diag(v[1])), rtol=1e-12)
    np.testing.assert_allclose(kl_normal_std(m, np.log(v)),
                               kl_gaussian_diag(m, v, 0.0 * m, np.ones_like(v)), rtol=1e-13)


@given(seed=SEEDS, K=st.integers(1, 8), scale=st.floats(0.01, 30))
def test_kl_discrete_properties(seed, K, scale):
    rng = np.random.default_rng(seed)
    lp, lq = scale * rng.normal(size=(2, 5, K))
    assert np.all(kl_categorical(lp, lq) >= 0)
    assert np.all(kl_categorical(lp, lp) <= 1e-15)
    assert np.all(kl_bernoulli(lp, lq) >= 0)
    assert np.all(kl_bernoulli(lp, lp) == 0)
    # cross-entropy decomposition H(p, q) = H(p) + KL(p || q)  [eq:cross-entropy], scipy as oracle
    p = scipy.special.softmax(lp, axis=-1)
    cross = -np.sum(p * log_softmax(lq), axis=-1)
    np.testing.assert_allclose(cross, scipy.stats.entropy(p, axis=-1) + kl_categorical(lp, lq),
                               rtol=1e-10, atol=1e-12)


def test_kl_extreme_logits_are_finite_and_right():
    # sigma(1e4) = 1 and sigma(-1e4) = e^-1e4 to double precision: KL = -log sigma(-1e4) = 1e4
    np.testing.assert_allclose(kl_bernoulli(1e4, -1e4), 1e4, rtol=1e-15)
    np.testing.assert_allclose(kl_bernoulli(-1e4, 1e4), 1e4, rtol=1e-15)
    assert kl_bernoulli(1e4, 1e4) == 0 and kl_bernoulli(-1e4, -1e4) == 0
    np.testing.assert_allclose(kl_categorical([1e4, 0.0], [0.0, 1e4]), 1e4, rtol=1e-15)
    assert np.isfinite(kl_categorical([1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]))


# ---------------------------------------------------------------- batching

def test_kl_gaussian_batched_equals_loop_and_broadcasts():
    mp, Sp, mq, Sq = _pair(11, 3, batch=(4, 2))
    out = kl_gaussian(mp, Sp, mq, Sq)
    assert out.shape == (4, 2)
    loop = np.array([[kl_gaussian(mp[i, j], Sp[i, j], mq[i, j], Sq[i, j]) for j in range(2)] for i in range(4)])
    np.testing.assert_allclose(out, loop, rtol=1e-13)
    # one q for the whole batch (single-solve path) and one p against many q (loop path)
    one_q = kl_gaussian(mp, Sp, mq[0, 0], Sq[0, 0])
    np.testing.assert_allclose(
        one_q, [[kl_gaussian(mp[i, j], Sp[i, j], mq[0, 0], Sq[0, 0]) for j in range(2)] for i in range(4)],
        rtol=1e-13)
    one_p = kl_gaussian(mp[0, 0], Sp[0, 0], mq, Sq)
    np.testing.assert_allclose(
        one_p, [[kl_gaussian(mp[0, 0], Sp[0, 0], mq[i, j], Sq[i, j]) for j in range(2)] for i in range(4)],
        rtol=1e-13)
    # a batch of means sharing one covariance
    assert kl_gaussian(mp[:, 0], Sp[0, 0], mq[0, 0], Sq[0, 0]).shape == (4,)


def test_kl_gaussian_keeps_float32():
    mp, Sp, mq, Sq = (a.astype(np.float32) for a in _pair(12, 3))
    out = kl_gaussian(mp, Sp, mq, Sq)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, kl_gaussian(*(a.astype(np.float64) for a in (mp, Sp, mq, Sq))), rtol=1e-5)
    assert kl_normal_std(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)).dtype == np.float32


# ---------------------------------------------------------------- torch oracle (float64, rtol 1e-10)

@given(seed=SEEDS, D=st.integers(1, 6), B=st.integers(1, 4))
def test_kl_gaussian_equals_torch(seed, D, B):
    from _require import require_torch

    torch = require_torch()
    td = torch.distributions
    mp, Sp, mq, Sq = _pair(seed, D, batch=(B,))
    ref = td.kl_divergence(td.MultivariateNormal(torch.tensor(mp), covariance_matrix=torch.tensor(Sp)),
                           td.MultivariateNormal(torch.tensor(mq), covariance_matrix=torch.tensor(Sq))).numpy()
    np.testing.assert_allclose(kl_gaussian(mp, Sp, mq, Sq), ref, rtol=1e-10)


@given(seed=SEEDS, D=st.integers(1, 6))
def test_kl_diag_and_std_normal_equal_torch(seed, D):
    from _require import require_torch

    torch = require_torch()
    td = torch.distributions
    rng = np.random.default_rng(seed)
    mp, mq = rng.normal(size=(2, 3, D))
    lvp, lvq = rng.uniform(-3, 2, size=(2, 3, D))
    T = torch.tensor

    def normal(m, lv):
        return td.Independent(td.Normal(T(m), T(np.exp(0.5 * lv))), 1)

    ref = td.kl_divergence(normal(mp, lvp), normal(mq, lvq)).numpy()
    np.testing.assert_allclose(kl_gaussian_diag(mp, np.exp(lvp), mq, np.exp(lvq)), ref, rtol=1e-10)
    ref_std = td.kl_divergence(normal(mp, lvp), normal(0 * mp, 0 * lvp)).numpy()
    np.testing.assert_allclose(kl_normal_std(mp, lvp), ref_std, rtol=1e-10)


@given(seed=SEEDS, K=st.integers(2, 8), scale=st.floats(0.1, 4))
def test_kl_discrete_equal_torch(seed, K, scale):
    from _require import require_torch

    torch = require_torch()
    td = torch.distributions
    rng = np.random.default_rng(seed)
    lp, lq = scale * rng.normal(size=(2, 6, K))
    T = torch.tensor
    ref_cat = td.kl_divergence(td.Categorical(logits=T(lp)), td.Categorical(logits=T(lq))).numpy()
    np.testing.assert_allclose(kl_categorical(lp, lq), ref_cat, rtol=1e-10)
    # Both torch and probgen subtract softplus terms of size ~|logit|, so a KL that is tiny
    # next to them carries a relative rounding error ~ eps * |logit| / KL (checked against
    # 50-digit mpmath: up to 1e-8 for torch, 5e-9 for probgen, all at KL < 1e-4).  Torch also
    # forms 1 - sigmoid(l) by subtraction, which costs it ~2e-10 at |l| ~ 30 (scale 8).
    # Compare where KL >= 1e-4 and |logits| stay moderate: there both are accurate to 1e-12.
    ref_b = td.kl_divergence(td.Bernoulli(logits=T(lp)), td.Bernoulli(logits=T(lq))).numpy()
    ours_b = kl_bernoulli(lp, lq)
    ok = ref_b > 1e-4
    np.testing.assert_allclose(ours_b[ok], ref_b[ok], rtol=1e-10)


# ---------------------------------------------------------------- Monte Carlo

def _within_5_se(closed, est, se):
    assert abs(closed - est) < 5 * se, (closed, est, se)


def test_kl_gaussian_inside_5_standard_errors_of_monte_carlo():
    mp, Sp, mq, Sq = _pair(21, 3)
    p, q = scipy.stats.multivariate_normal(mp, Sp), scipy.stats.multivariate_normal(mq, Sq)
    est, se = kl_monte_carlo(p.logpdf, q.logpdf, lambda n, rng: rng.multivariate_normal(mp, Sp, size=n),
                             20000, rng=0)
    _within_5_se(kl_gaussian(mp, Sp, mq, Sq), est, se)
    assert se < 0.05 * kl_gaussian(mp, Sp, mq, Sq)  # the check has power


def test_kl_std_normal_and_diag_inside_5_standard_errors():
    rng = np.random.default_rng(22)
    m, lv = rng.normal(size=4), rng.uniform(-2, 1, size=4)
    sd = np.exp(0.5 * lv)
    est, se = kl_monte_carlo(lambda z: scipy.stats.norm(m, sd).logpdf(z).sum(1),
                             lambda z: scipy.stats.norm().logpdf(z).sum(1),
                             lambda n, r: m + sd * r.standard_normal((n, 4)), 20000, rng=1)
    _within_5_se(kl_normal_std(m, lv), est, se)


def test_kl_bernoulli_and_categorical_inside_5_standard_errors():
    rng = np.random.default_rng(23)
    lp, lq = rng.normal(size=(2, 10)) * 2
    pp, pq = scipy.special.expit(lp), scipy.special.expit(lq)
    est, se = kl_monte_carlo(lambda x: scipy.stats.bernoulli(pp).logpmf(x).sum(1),
                             lambda x: scipy.stats.bernoulli(pq).logpmf(x).sum(1),
                             lambda n, r: (r.random((n, 10)) < pp).astype(float), 20000, rng=2)
    _within_5_se(kl_bernoulli(lp, lq).sum(), est, se)
    cp, cq = scipy.special.softmax(lp), scipy.special.softmax(lq)
    est, se = kl_monte_carlo(lambda k: np.log(cp[k]), lambda k: np.log(cq[k]),
                             lambda n, r: r.choice(10, size=n, p=cp), 20000, rng=3)
    _within_5_se(kl_categorical(lp, lq), est, se)


def test_monte_carlo_standard_error_matches_spread_of_estimates():
    # 400 independent small-n estimates: their spread is what the standard error predicts
    m, lv = np.array([1.0]), np.array([0.5])
    sd = np.exp(0.5 * lv)
    log_p = lambda z: scipy.stats.norm(m, sd).logpdf(z).sum(1)  # noqa: E731
    log_q = lambda z: scipy.stats.norm().logpdf(z).sum(1)  # noqa: E731
    sample = lambda n, r: m + sd * r.standard_normal((n, 1))  # noqa: E731
    rng = np.random.default_rng(24)
    runs = np.array([kl_monte_carlo(log_p, log_q, sample, 50, rng) for _ in range(400)])
    # unbiased: mean of 400 estimates within 5 standard errors of the closed form
    _within_5_se(kl_normal_std(m, lv), runs[:, 0].mean(), runs[:, 0].std(ddof=1) / np.sqrt(400))
    # the sd of 400 estimates has relative sampling error ~ 1/sqrt(2 * 399) = 3.5%: 5 of those is 18%
    np.testing.assert_allclose(np.mean(runs[:, 1]), runs[:, 0].std(ddof=1), rtol=0.18)
    # reproducible for a seed, different for another
    assert kl_monte_carlo(log_p, log_q, sample, 10, 5) == kl_monte_carlo(log_p, log_q, sample, 10, 5)
    assert kl_monte_carlo(log_p, log_q, sample, 10, 5) != kl_monte_carlo(log_p, log_q, sample, 10, 6)


# ---------------------------------------------------------------- bad input

def test_kl_bad_input():
    mp, Sp, mq, Sq = _pair(31, 2)
    bad = np.array([[1.0, 3.0], [3.0, 1.0]])
    with pytest.raises(ValueError, match="cov_p must be symmetric positive definite"):
        kl_gaussian(mp, bad, mq, Sq)
    with pytest.raises(ValueError, match=r"cov_q must be symmetric positive definite.*batch index 1"):
        kl_gaussian(mp, Sp, np.stack([mq, mq]), np.stack([Sq, bad]))
    with pytest.raises(ValueError, match="cov_q must be symmetric positive definite.*not symmetric"):
        kl_gaussian(mp, Sp, mq, Sq + np.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"mean_q must end in shape \(2,\)"):
        kl_gaussian(mp, Sp, np.zeros(3), Sq)
    with pytest.raises(ValueError, match="cov_p must end in shape"):
        kl_gaussian(mp, np.eye(3), mq, Sq)
    with pytest.raises(ValueError, match="batch shapes do not broadcast"):
        kl_gaussian(np.zeros((3, 2)), Sp, np.zeros((4, 2)), Sq)
    with pytest.raises(ValueError, match="mean_p contains 1 NaN"):
        kl_gaussian(np.array([np.nan, 0.0]), Sp, mq, Sq)
    with pytest.raises(ValueError, match="var_q must be > 0"):
        kl_gaussian_diag(mp, np.ones(2), mq, np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="mean and log_var must have the same shape"):
        kl_normal_std(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="same number K"):
        kl_categorical(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="logits_q contains"):
        kl_bernoulli(np.zeros(3), np.array([0.0, np.inf, 0.0]))
    log_n = scipy.stats.norm().logpdf
    draw = lambda n, r: r.standard_normal(n)  # noqa: E731
    with pytest.raises(TypeError, match="log_q must be callable"):
        kl_monte_carlo(log_n, 3.0, draw, 10)
    with pytest.raises(ValueError, match="n must be >= 2"):
        kl_monte_carlo(log_n, log_n, draw, 1)
    with pytest.raises(ValueError, match=r"log_p\(x\) must have shape"):
        kl_monte_carlo(lambda x: log_n(x)[:5], log_n, draw, 10)
    with pytest.raises(ValueError, match="q may not cover the support of p"):
        kl_monte_carlo(log_n, lambda x: np.where(x > 0, 0.0, -np.inf), draw, 10, rng=0)
