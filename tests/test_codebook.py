"""The nearest-codebook kernel (probgen.kernels.codebook) against brute force.

Brute force: every squared distance summed in float64 and ``np.argmin`` (lowest index on ties).
With small-integer data every sum is exact, so the kernel must agree bit for bit, ties included;
with continuous data the two sums differ only in summation order, so the kernel's pick must be the
brute-force argmin wherever that argmin is separated from the runner-up by more than float64
rounding, and within rounding of the minimum otherwise.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from probgen.kernels.codebook import code_sums, code_sums_reference, nearest_codebook, nearest_codebook_reference

DTYPES = (np.float32, np.float64)


def _brute_force(x, codebook):
    diff = np.asarray(x, np.float64)[:, None, :] - np.asarray(codebook, np.float64)[None, :, :]
    return np.einsum("nkd,nkd->nk", diff, diff)


def _assert_argmin(x, codebook, indices, distances):
    """``indices`` is the argmin of the float64 brute force up to float64 summation rounding."""
    sq = _brute_force(x, codebook)
    N, K = sq.shape
    D = x.shape[1]
    assert indices.shape == (N,) and indices.dtype == np.int64
    m = sq.min(axis=1)
    tol = 4 * (D + 1) * np.finfo(np.float64).eps * m  # all terms >= 0: relative error of a sum
    chosen = sq[np.arange(N), indices]
    assert np.all(chosen <= m + tol)
    runner_up = np.sort(sq, axis=1)[:, 1] if K > 1 else np.full(N, np.inf)
    clear = runner_up > m + 2 * tol
    np.testing.assert_array_equal(indices[clear], np.argmin(sq, axis=1)[clear])
    rtol = 1e-6 if distances.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(distances, chosen.astype(distances.dtype), rtol=rtol, atol=0)


@st.composite
def integer_problems(draw):
    """Small-integer x and codebook: all sums exact, many exact ties, duplicated code vectors."""
    dtype = draw(st.sampled_from(DTYPES))
    D = draw(st.integers(1, 6))
    K = draw(st.integers(1, 12))
    N = draw(st.integers(0, 40))
    values = st.integers(-2, 2)
    codebook = draw(hnp.arrays(np.int64, (K, D), elements=values)).astype(dtype)
    if K > 1 and draw(st.booleans()):  # plant duplicated rows at random places
        src = draw(st.lists(st.integers(0, K - 1), min_size=1, max_size=K))
        dst = draw(st.permutations(range(K)))[: len(src)]
        codebook[dst] = codebook[src]
    x = draw(hnp.arrays(np.int64, (N, D), elements=values)).astype(dtype)
    return x, codebook


@given(integer_problems())
def test_exact_argmin_with_ties_matches_brute_force(problem):
    x, codebook = problem
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    sq = _brute_force(x, codebook)
    expected = np.argmin(sq, axis=1) if len(x) else np.empty(0, np.int64)
    np.testing.assert_array_equal(indices, expected)  # lowest index among exact ties
    np.testing.assert_array_equal(nearest_codebook(x, codebook), expected)  # the path without distances
    np.testing.assert_array_equal(distances, sq[np.arange(len(x)), expected].astype(x.dtype))
    assert distances.dtype == x.dtype
    ref_idx, ref_dist = nearest_codebook_reference(x, codebook, return_distances=True)
    np.testing.assert_array_equal(indices, ref_idx)
    np.testing.assert_array_equal(distances, ref_dist)


@given(
    st.integers(1, 300),
    st.integers(1, 80),
    st.integers(1, 40),
    st.sampled_from(DTYPES),
    st.floats(1e-3, 1e3),
    st.integers(0, 2**32 - 1),
)
def test_argmin_matches_brute_force_on_continuous_data(N, K, D, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    codebook = (scale * rng.standard_normal((K, D))).astype(dtype)
    x = (scale * rng.standard_normal((N, D))).astype(dtype)
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    assert distances.dtype == dtype
    _assert_argmin(x, codebook, indices, distances)
    np.testing.assert_array_equal(indices, nearest_codebook(x, codebook))


@pytest.mark.parametrize("dtype", DTYPES)
def test_duplicated_codebook_resolves_to_first_copy(dtype):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((37, 16)).astype(dtype)
    codebook = np.concatenate([base, base[::-1], base])  # every vector three times
    x = rng.standard_normal((2000, 16)).astype(dtype)
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    base_idx, base_dist = nearest_codebook(x, base, return_distances=True)
    np.testing.assert_array_equal(indices, base_idx)  # the copy in the first block wins
    np.testing.assert_array_equal(distances, base_dist)
    # points exactly on a code: distance 0, the first copy
    on_code = np.concatenate([base[::-1], base])
    idx, dist = nearest_codebook(on_code, codebook, return_distances=True)
    np.testing.assert_array_equal(idx, np.concatenate([np.arange(37)[::-1], np.arange(37)]))
    np.testing.assert_array_equal(dist, np.zeros(74, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_equidistant_codes_give_lowest_index(dtype):
    rng = np.random.default_rng(1)
    e = rng.standard_normal((5, 8)).astype(dtype)
    codebook = np.concatenate([e, -e])  # x = 0 is equidistant from e_k and -e_k
    codebook[[2, 7]] = codebook[[7, 2]]
    norms = np.einsum("kd,kd->k", codebook.astype(np.float64), codebook.astype(np.float64))
    expected = np.flatnonzero(norms == norms.min())[0]
    assert nearest_codebook(np.zeros((3, 8), dtype), codebook).tolist() == [expected] * 3


def test_near_ties_defeat_the_gemm_screen_but_not_the_kernel():
    """Codes 1e-3 apart around a far-away centre: float32 GEMM scores (error ~ u |x| |e| ~ 1e-3)
    cannot rank them, so the rigorous re-scoring is what makes the answer right."""
    rng = np.random.default_rng(2)
    D, K, N = 32, 64, 3000
    centre = rng.standard_normal(D) * 30.0
    codebook = (centre + 1e-3 * rng.standard_normal((K, D))).astype(np.float32)
    x = (centre + 1e-3 * rng.standard_normal((N, D))).astype(np.float32)
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    _assert_argmin(x, codebook, indices, distances)
    c = codebook.astype(np.float32)
    naive = np.argmin(0.5 * np.einsum("kd,kd->k", c, c) - x @ c.T, axis=1)
    assert np.mean(naive != np.argmin(_brute_force(x, codebook), axis=1)) > 0.1  # the screen alone fails
    assert np.all(distances >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-21, 1e-160, 1e15])
def test_extreme_scales(dtype, scale):
    """Scores that underflow into subnormals (or to 0) or that are huge still give the true argmin."""
    if dtype == np.float32 and scale == 1e-160:
        scale = 1e-40  # subnormal float32 inputs
    rng = np.random.default_rng(5)
    codebook = (scale * rng.standard_normal((50, 6))).astype(dtype)
    x = (scale * rng.standard_normal((300, 6))).astype(dtype)
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    _assert_argmin(x, codebook, indices, distances)


@pytest.mark.parametrize("dtype", DTYPES)
def test_many_chunks_and_a_ragged_last_chunk(dtype, monkeypatch):
    from probgen.kernels import codebook as module

    rng = np.random.default_rng(3)
    codebook = rng.standard_normal((300, 12)).astype(dtype)
    x = rng.standard_normal((1000, 12)).astype(dtype)
    one_chunk = nearest_codebook(x, codebook, return_distances=True)
    # the smallest chunks (256 rows, the last 232), whichever BLAS thread count picks the chunk size
    monkeypatch.setattr(module, "_CHUNK_BYTES", 1)
    monkeypatch.setattr(module, "_CHUNK_BYTES_SERIAL", 1)
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    _assert_argmin(x, codebook, indices, distances)
    np.testing.assert_array_equal(indices, one_chunk[0])  # the chunking does not change the answer
    np.testing.assert_array_equal(distances, one_chunk[1])


@pytest.mark.parametrize("threads", [2, 3])
def test_rows_split_over_threads_give_the_same_answer(threads, monkeypatch):
    """With several BLAS threads the rows are split over threads of our own (BLAS at one thread
    meanwhile): same indices and distances as the serial search, and BLAS's setting is restored."""
    from probgen.kernels import _threads as blas
    from probgen.kernels import codebook as module

    rng = np.random.default_rng(5)
    codebook = rng.standard_normal((300, 12)).astype(np.float32)
    x = rng.standard_normal((3000, 12)).astype(np.float32)
    x[1500] = codebook[7]  # a row on a code, and rows near the split points
    serial = nearest_codebook(x, codebook, return_distances=True)
    before = blas.blas_threads()
    monkeypatch.setattr(module, "_CHUNK_BYTES_SERIAL", 1)  # 256-row chunks: every thread gets several
    monkeypatch.setattr(module, "blas_threads", lambda: threads)
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    np.testing.assert_array_equal(indices, serial[0])
    np.testing.assert_array_equal(distances, serial[1])
    _assert_argmin(x, codebook, indices, distances)
    assert blas.blas_threads() == before


def test_large_entries_take_the_norm_check_path():
    """Rows large enough that |x_n|^2 could overflow get their norms checked; the answer is unchanged."""
    rng = np.random.default_rng(4)
    # max|x| = 5e18 > sqrt(finfo.max / 4 / D) = 3.3e18, so the norms are summed; |x_n|^2 ~ 2.5e37 is fine
    x = (rng.standard_normal((50, 8)) * 1e17).astype(np.float32)
    x[:, 0] = 5e18
    codebook = (rng.standard_normal((40, 8)) * 1e17).astype(np.float32)
    codebook[:, 0] = 5e18 + rng.standard_normal(40) * 1e17
    indices, distances = nearest_codebook(x, codebook, return_distances=True)
    _assert_argmin(x, codebook, indices, distances)


def test_dtypes_kept_and_promoted():
    rng = np.random.default_rng(4)
    x32 = rng.standard_normal((10, 3)).astype(np.float32)
    c32 = rng.standard_normal((4, 3)).astype(np.float32)
    assert nearest_codebook(x32, c32, return_distances=True)[1].dtype == np.float32
    assert nearest_codebook(x32, c32.astype(np.float64), return_distances=True)[1].dtype == np.float64
    idx, dist = nearest_codebook(np.zeros((0, 3)), c32, return_distances=True)
    assert idx.shape == (0,) and idx.dtype == np.int64 and dist.shape == (0,)
    assert nearest_codebook(x32.tolist(), c32).dtype == np.int64  # lists are fine


@pytest.mark.parametrize(
    "x, codebook, exc, match",
    [
        (np.ones((3, 4)), np.ones((5, 3)), ValueError, "same number of columns"),
        (np.ones((3, 4)), np.ones((0, 4)), ValueError, "codebook must have at least 1 row"),
        (np.array([[np.nan, 0.0]]), np.ones((2, 2)), ValueError, "x contains 1 NaN"),
        (np.ones((1, 2)), np.array([[np.inf, 0.0]]), ValueError, "codebook contains 1 NaN or infinite"),
        (np.ones(4), np.ones((2, 4)), ValueError, "x must be a 2-D array"),
        (np.ones((3, 4)), np.ones((1, 2, 4)), ValueError, "codebook must be a 2-D array"),
        ("abc", np.ones((2, 4)), TypeError, "x must be a numeric array"),
        (np.ones((2, 2), np.float32), np.full((2, 2), 3e19, np.float32), ValueError, "overflows float32"),
        (np.full((2, 2), 3e19, np.float32), np.ones((2, 2), np.float32), ValueError, "overflows float32"),
    ],
)
def test_bad_input_is_rejected(x, codebook, exc, match):
    with pytest.raises(exc, match=match):
        nearest_codebook(x, codebook)


# ----------------------------------------------------------------------------- code_sums
@given(st.integers(0, 40), st.integers(1, 6), st.integers(1, 9), st.sampled_from(DTYPES), st.integers(0, 2**31))
def test_code_sums_equal_add_at_bit_for_bit(B, C, K, dtype, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, K, size=B)
    values = rng.standard_normal((B, C)).astype(dtype)
    got = code_sums(idx, values, K, scale=-2.0 / 7)
    assert got.dtype == dtype and got.shape == (K, C)
    np.testing.assert_array_equal(got, code_sums_reference(idx, values, K, scale=-2.0 / 7))
    # the definition, summed in float64: every row lands in its code, nothing else
    expect = np.zeros((K, C))
    for i, k in enumerate(idx):
        expect[k] += (-2.0 / 7) * values[i].astype(np.float64)
    np.testing.assert_allclose(got, expect, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("idx, match", [([0, 3], r"\[0, 3\)"), ([-1, 0], r"\[0, 3\)"), ([0.0, 1.0], "integers"),
                                        ([0], r"shape \(2,\)")])
def test_code_sums_rejects_bad_indices(idx, match):
    with pytest.raises(ValueError, match=match):
        code_sums(np.array(idx), np.ones((2, 3)), 3)


def test_one_blas_thread_sets_and_restores():
    from threadpoolctl import threadpool_limits

    from probgen.kernels._threads import blas_threads, one_blas_thread

    with threadpool_limits(2, user_api="blas"):
        outside = blas_threads()
        with one_blas_thread():
            assert blas_threads() == 1
        assert blas_threads() == outside
        with pytest.raises(RuntimeError), one_blas_thread():
            raise RuntimeError("restored on errors too")
        assert blas_threads() == outside


def test_one_blas_thread_nests_and_overlaps():
    from threadpoolctl import threadpool_limits

    from probgen.kernels._threads import blas_threads, one_blas_thread

    with threadpool_limits(2, user_api="blas"):
        outer = one_blas_thread()
        outer.__enter__()
        with one_blas_thread():  # an overlapping block (as from a second thread)
            assert blas_threads() == 1
        assert blas_threads() == 1  # the first block is still running
        outer.__exit__(None, None, None)
        assert blas_threads() == 2
