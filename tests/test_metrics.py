"""MMD: brute-force and scipy oracles, the exact median heuristic (held and streamed), unbiasedness of
the U-statistic and the closed-form bias of the V-statistic, symmetry, invariances, the permutation
test's calibration and power, and bad input."""
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist, pdist

from probgen import metrics
from probgen.metrics import mmd2, mmd_permutation_test


def _brute_loops(X, Y, s, unbiased):
    """The estimators written as plain double loops over the rows [eq:mmd-unbiased] [eq:mmd-biased]."""
    def k(a, b):
        return math.exp(-sum((ai - bi) ** 2 for ai, bi in zip(a, b)) / (2.0 * s * s))

    m, n = len(X), len(Y)
    sxx = sum(k(X[i], X[j]) for i in range(m) for j in range(m) if unbiased is False or i != j)
    syy = sum(k(Y[i], Y[j]) for i in range(n) for j in range(n) if unbiased is False or i != j)
    sxy = sum(k(X[i], Y[j]) for i in range(m) for j in range(n))
    if unbiased:
        return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)
    return sxx / m**2 + syy / n**2 - 2.0 * sxy / (m * n)


def _brute_cdist(X, Y, s, unbiased):
    Kxx, Kyy, Kxy = (np.exp(-cdist(A, B, "sqeuclidean") / (2.0 * s * s)) for A, B in ((X, X), (Y, Y), (X, Y)))
    m, n = len(X), len(Y)
    if unbiased:
        return ((Kxx.sum() - np.trace(Kxx)) / (m * (m - 1)) + (Kyy.sum() - np.trace(Kyy)) / (n * (n - 1))
                - 2.0 * Kxy.mean())
    return Kxx.mean() + Kyy.mean() - 2.0 * Kxy.mean()


def _median_oracle(X, Y):
    return float(np.median(pdist(np.vstack([X, Y]))))  # [eq:mmd-median]: all pooled pairs i < j


def _samples(m, n, D, shift=0.5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, D)), rng.standard_normal((n, D)) + shift


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 rows, so the block bookkeeping (splits at m, partial last blocks) is exercised."""
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 8 * 3 * 60)


# --------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("bandwidth", ["median", 0.7])
def test_equals_a_double_loop(unbiased, bandwidth):
    X, Y = _samples(9, 7, 3)
    s = _median_oracle(X, Y) if bandwidth == "median" else bandwidth
    expected = _brute_loops(X.tolist(), Y.tolist(), s, unbiased)
    assert mmd2(X, Y, bandwidth=bandwidth, unbiased=unbiased) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("m,n,D", [(60, 45, 4), (2, 2, 1), (33, 80, 10)])
@pytest.mark.parametrize("blocks", ["default", "small"])
def test_equals_scipy_cdist(unbiased, m, n, D, blocks, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    X, Y = _samples(m, n, D, seed=m + n + D)
    for bandwidth in ("median", 1.3):
        s = _median_oracle(X, Y) if bandwidth == "median" else bandwidth
        np.testing.assert_allclose(mmd2(X, Y, bandwidth=bandwidth, unbiased=unbiased),
                                   _brute_cdist(X, Y, s, unbiased), rtol=1e-12, atol=1e-15)


def test_biased_estimator_accepts_single_rows_and_float32_input():
    X, Y = _samples(1, 4, 3)
    s = _median_oracle(X, Y)
    np.testing.assert_allclose(mmd2(X, Y, unbiased=False), _brute_cdist(X, Y, s, False), rtol=1e-12)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    ref = _brute_cdist(X32.astype(np.float64), Y32.astype(np.float64), _median_oracle(X32.astype(float),
                                                                                        Y32.astype(float)), False)
    np.testing.assert_allclose(mmd2(X32, Y32, unbiased=False), ref, rtol=1e-12)  # computed in float64


# --------------------------------------------------------------------------- the median heuristic
@pytest.mark.parametrize("m,n", [(20, 13), (20, 14)])  # 528 pairs (even), 561 (odd)
def test_median_is_the_median_of_all_pooled_pair_distances(m, n):
    X, Y = _samples(m, n, 5)
    Z, sq = metrics._pooled(X, Y)
    np.testing.assert_allclose(metrics._median_pair_distance(Z, sq), _median_oracle(X, Y), rtol=1e-13)


@pytest.mark.parametrize("N", [23, 24, 26])  # 253 (odd), 276 (even), 325 (odd) pairs
@pytest.mark.parametrize("data", ["gaussian", "binary"])  # binary rows: massive ties among distances
def test_streamed_selection_equals_the_held_median_exactly(N, data, monkeypatch):
    rng = np.random.default_rng(N)
    Z0 = rng.standard_normal((N, 4)) if data == "gaussian" else (rng.random((N, 6)) < 0.5).astype(float)
    Z, sq = metrics._pooled(Z0[:10], Z0[10:])
    held = metrics._median_pair_distance(Z, sq)
    # force the streamed path with tiny histograms and a tiny keep-buffer: several refinement levels
    monkeypatch.setattr(metrics, "_MEDIAN_DIRECT_PAIRS", 0)
    monkeypatch.setattr(metrics, "_SELECT_BINS", 4)
    monkeypatch.setattr(metrics, "_SELECT_KEEP", 5)
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 8 * 4 * N)
    assert metrics._median_pair_distance(Z, sq) == held
    d = np.sort(np.concatenate(list(metrics._pair_distances(Z, sq))))
    for k in (0, 1, len(d) // 3, len(d) - 1):  # any rank, not only the middle ones
        assert metrics._kth_pair_distance(Z, sq, k) == d[k]


# --------------------------------------------------------------------------- bias
def test_u_statistic_is_unbiased_and_v_statistic_has_the_closed_form_bias():
    """X, Y ~ N(0, I_2), m = n = 8, s = 1.  For x, x' iid, x - x' ~ N(0, 2I) and
    kappa = E k(x, x') = (1 + 2 sigma^2 / s^2)^{-D/2} = 1/3, so E[V] = (1 - kappa)(1/m + 1/n) = 1/6
    [eq:mmd-biased-bias] while E[U] = 0.  Checked over 3000 independent draws (4 standard errors)."""
    rng = np.random.default_rng(123)
    m = n = 8
    R = 3000
    u, v = np.empty(R), np.empty(R)
    for r in range(R):
        X, Y = rng.standard_normal((m, 2)), rng.standard_normal((n, 2))
        u[r] = mmd2(X, Y, bandwidth=1.0)
        v[r] = mmd2(X, Y, bandwidth=1.0, unbiased=False)
    se_u, se_v = u.std(ddof=1) / math.sqrt(R), v.std(ddof=1) / math.sqrt(R)
    assert abs(u.mean()) <= 4 * se_u
    kappa = 3.0 ** -1.0
    assert abs(v.mean() - (1 - kappa) * (1 / m + 1 / n)) <= 4 * se_v
    assert v.mean() > 20 * se_v and (u < 0).any() and (v >= 0).all()


# --------------------------------------------------------------------------- symmetry, invariance
@pytest.mark.parametrize("unbiased", [True, False])
def test_symmetric_in_the_two_samples(unbiased):
    X, Y = _samples(31, 17, 3)
    for bandwidth in ("median", 2.0):
        np.testing.assert_allclose(mmd2(X, Y, bandwidth=bandwidth, unbiased=unbiased),
                                   mmd2(Y, X, bandwidth=bandwidth, unbiased=unbiased), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("unbiased", [True, False])
def test_median_heuristic_is_invariant_to_translation_rotation_and_scaling(unbiased):
    X, Y = _samples(40, 30, 3, shift=0.3)
    rng = np.random.default_rng(9)
    base = mmd2(X, Y, unbiased=unbiased)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    for c in (3.7, 1e-3, 1e3):
        np.testing.assert_allclose(mmd2(c * X, c * Y, unbiased=unbiased), base, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mmd2(X @ Q, Y @ Q, unbiased=unbiased), base, rtol=1e-12, atol=1e-15)
    for size in (1.0, 100.0):
        # a shift of size t rounds the coordinates by ~ eps * t = 2e-14 at t = 100 (unit-scale data)
        t = size * rng.standard_normal(3)
        np.testing.assert_allclose(mmd2(X + t, Y + t, unbiased=unbiased), base, rtol=0, atol=1e-13)
    # with a fixed bandwidth, scaling the data and the bandwidth together changes nothing
    np.testing.assert_allclose(mmd2(2.5 * X, 2.5 * Y, bandwidth=2.5 * 0.8, unbiased=unbiased),
                               mmd2(X, Y, bandwidth=0.8, unbiased=unbiased), rtol=1e-12, atol=1e-15)


def test_identical_samples_give_zero_v_statistic_and_negative_u_statistic():
    X, _ = _samples(12, 1, 2)
    assert mmd2(X, X, unbiased=False) == pytest.approx(0.0, abs=1e-15)
    # U with X = Y: the cross term keeps the diagonal k = 1 the within terms leave out
    assert mmd2(X, X) < 0


# --------------------------------------------------------------------------- permutation test
def test_permutation_test_rejects_different_distributions():
    X, Y = _samples(50, 50, 2, shift=1.0, seed=4)
    stat, p = mmd_permutation_test(X, Y, 200, rng=0)
    np.testing.assert_allclose(stat, mmd2(X, Y), rtol=1e-12)
    assert p == 1 / 201  # no relabelling reaches the observed split


def test_permutation_test_is_calibrated_under_the_null():
    rng = np.random.default_rng(11)
    ps = np.array([mmd_permutation_test(rng.standard_normal((20, 2)), rng.standard_normal((20, 2)), 99,
                                        rng=rng)[1] for _ in range(60)])
    # p is (discretely) uniform under H0: mean 0.5, P(p <= 0.05) = 0.05
    assert 0.38 <= ps.mean() <= 0.62
    assert np.mean(ps <= 0.05) <= 0.2 and ps.min() >= 1 / 100 and ps.max() <= 1


@pytest.mark.parametrize("unbiased", [True, False])
def test_permutation_test_paths_agree(unbiased, monkeypatch):
    X, Y = _samples(15, 11, 3, shift=0.4)
    with_matrix = mmd_permutation_test(X, Y, 50, rng=5, unbiased=unbiased, bandwidth=1.1)
    monkeypatch.setattr(metrics, "_KERNEL_MATRIX_BYTES", 0)  # recompute the block sums per permutation
    recomputed = mmd_permutation_test(X, Y, 50, rng=5, unbiased=unbiased, bandwidth=1.1)
    np.testing.assert_allclose(with_matrix[0], recomputed[0], rtol=1e-12)
    np.testing.assert_allclose(with_matrix[0], mmd2(X, Y, unbiased=unbiased, bandwidth=1.1), rtol=1e-12)
    assert with_matrix[1] == recomputed[1]


# --------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_clearly():
    X, Y = _samples(5, 4, 3)
    with pytest.raises(ValueError, match="same number of columns"):
        mmd2(X, Y[:, :2])
    with pytest.raises(ValueError, match="at least 2 row"):
        mmd2(X[:1], Y)
    with pytest.raises(ValueError, match="at least 2 row"):
        mmd_permutation_test(X, Y[:1], 10)
    with pytest.raises(ValueError, match="at least 1 row"):
        mmd2(X[:0], Y, unbiased=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        mmd2(np.where(X > 1, np.nan, X), Y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        mmd2(X, np.full_like(Y, np.inf))
    with pytest.raises(ValueError, match="2-D"):
        mmd2(X[:, 0], Y)
    with pytest.raises(TypeError, match="numeric"):
        mmd2("abc", Y)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="bandwidth must be > 0"):
            mmd2(X, Y, bandwidth=bad)
    with pytest.raises(ValueError, match="bandwidth must be finite"):
        mmd2(X, Y, bandwidth=np.nan)
    with pytest.raises(ValueError, match="bandwidth must be one of 'median'"):
        mmd2(X, Y, bandwidth="mean")
    with pytest.raises(TypeError, match="bandwidth must be a real number"):
        mmd2(X, Y, bandwidth=None)
    with pytest.raises(ValueError, match="too small"):
        mmd2(X, Y, bandwidth=1e-200)
    with pytest.raises(TypeError, match="unbiased must be True or False"):
        mmd2(X, Y, unbiased="yes")
    with pytest.raises(ValueError, match="median heuristic gives bandwidth 0"):
        mmd2(np.ones((4, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="n_permutations must be >= 1"):
        mmd_permutation_test(X, Y, 0)
    with pytest.raises(TypeError, match="n_permutations must be an int"):
        mmd_permutation_test(X, Y, 1.5)
    with pytest.raises(TypeError, match="rng"):
        mmd_permutation_test(X, Y, 5, rng="seed")
