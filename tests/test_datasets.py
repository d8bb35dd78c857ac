"""Data loaders and transforms: the real shared files, small files written here, malformed variants."""
import gzip
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import norm

from probgen.datasets import (
    binarize,
    dequantize,
    load_binarized_mnist,
    load_digits,
    load_mnist,
    load_mnist_idx,
    split,
    train_test_split,
)


# ----------------------------------------------------------------------------- digits
def test_load_digits_views_agree_with_sklearn():
    from sklearn.datasets import load_digits as sk

    d = load_digits()
    raw = sk()
    assert d.images.shape == (1797, 8, 8) and d.X.shape == (1797, 64)
    assert d.levels.shape == (1797, 64) and d.binary.shape == (1797, 64) and d.target.shape == (1797,)
    assert d.binary.dtype == np.uint8 and np.issubdtype(d.levels.dtype, np.integer)
    np.testing.assert_array_equal(d.levels, raw.data)
    np.testing.assert_array_equal(d.X, raw.data / 16.0)
    np.testing.assert_array_equal(d.images.reshape(1797, 64), d.X)
    np.testing.assert_array_equal(d.target, raw.target)
    assert d.X.min() == 0.0 and d.X.max() == 1.0
    assert set(np.unique(d.levels)) == set(range(17))
    np.testing.assert_array_equal(d.binary, (raw.data > 8).astype(np.uint8))  # X > 0.5 <=> level > 8
    np.testing.assert_array_equal(load_digits(0.25).binary, (raw.data > 4).astype(np.uint8))


# ----------------------------------------------------------------------------- splitting
@given(n=st.integers(3, 500), a=st.floats(0.05, 0.9), seed=st.integers(0, 2**32 - 1))
def test_split_is_a_partition_with_the_requested_sizes(n, a, seed):
    fr = (a, (1 - a) / 2, (1 - a) / 2)
    try:
        parts = split(n, fr, rng=seed)
    except ValueError as exc:  # only when some f*n < 1 leaves a part without any example
        assert "empty part" in str(exc) and min(fr) * n < 1
        return
    assert all(len(p) > 0 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    sizes = np.array([len(p) for p in parts])
    assert np.all(np.abs(sizes - np.array(fr) * n) < 1.0) and sizes.sum() == n
    for p, q in zip(parts, split(n, fr, rng=seed)):
        np.testing.assert_array_equal(p, q)


def test_split_seed_and_errors():
    a, _ = split(1000, (0.5, 0.5), rng=1)
    b, _ = split(1000, (0.5, 0.5), rng=2)
    assert not np.array_equal(np.sort(a), np.sort(b))
    with pytest.raises(ValueError, match="sum to 1"):
        split(10, (0.5, 0.4))
    with pytest.raises(ValueError, match="positive"):
        split(10, (1.2, -0.2))
    with pytest.raises(ValueError, match="n must be"):
        split(0)


def test_train_test_split_keeps_rows_aligned():
    X = np.arange(40).reshape(20, 2)
    y = np.arange(20)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, rng=0)
    assert Xte.shape == (5, 2) and Xtr.shape == (15, 2)
    np.testing.assert_array_equal(Xtr[:, 0] // 2, ytr)
    np.testing.assert_array_equal(Xte[:, 0] // 2, yte)
    np.testing.assert_array_equal(np.sort(np.concatenate([ytr, yte])), y)
    assert train_test_split(X, test_size=3, rng=0)[1].shape == (3, 2)
    with pytest.raises(ValueError, match="first axis"):
        train_test_split(X, y[:-1])
    with pytest.raises(ValueError, match="test_size"):
        train_test_split(X, test_size=20)
    with pytest.raises(ValueError, match="test_size"):
        train_test_split(X, test_size=1.5)


# ----------------------------------------------------------------------------- dequantisation
def test_dequantize_stays_in_the_cell_of_its_level():
    L = load_digits().levels
    Y = dequantize(L, n_levels=17, rng=0)
    assert Y.shape == L.shape and Y.dtype == np.float64
    assert Y.min() >= 0.0 and Y.max() < 1.0
    np.testing.assert_array_equal(np.floor(Y * 17), L)
    u = Y * 17 - L  # the noise: U(0,1), mean 1/2, variance 1/12
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
    np.testing.assert_array_equal(Y, dequantize(L, 17, rng=0))
    assert not np.array_equal(Y, dequantize(L, 17, rng=1))
    assert dequantize(L, 17, rng=0, dtype=np.float32).dtype == np.float32


def test_dequantize_rejects_bad_levels():
    with pytest.raises(ValueError, match="integers in"):
        dequantize([[0, 17]], n_levels=17)
    with pytest.raises(ValueError, match="integers in"):
        dequantize([[0.5, 1]], n_levels=17)
    with pytest.raises(ValueError, match="n_levels"):
        dequantize([[0, 1]], n_levels=1)


def test_dequantization_bound_eq_dequantization():
    """log P(x) >= E_u[log p((x+u)/K)] - D log K, with P(x) the mass p gives the cell of x.

    Oracle: a diagonal Gaussian density p, whose cell masses are exact CDF differences and whose
    E_u[log p] has a closed form (E[y]=(x+1/2)/K, Var[y]=1/(12K^2)); the Monte-Carlo average over
    ``dequantize`` draws must match the closed form, and the bound must hold.
    """
    K = 17
    d = load_digits()
    L = d.levels[:50]
    mu, sd = d.X.mean(0), d.X.std(0) + 0.05
    log_P = np.log(norm.cdf((L + 1) / K, mu, sd) - norm.cdf(L / K, mu, sd)).sum(1)
    e_logp = (-0.5 * np.log(2 * np.pi * sd**2) - (((L + 0.5) / K - mu) ** 2 + 1 / (12 * K**2)) / (2 * sd**2)).sum(1)
    bound = e_logp - L.shape[1] * np.log(K)
    assert np.all(log_P >= bound)
    draws = np.stack([norm.logpdf(dequantize(L, K, rng=s), mu, sd).sum(1) for s in range(400)])
    se = draws.std(0, ddof=1) / np.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(0) - e_logp) < 5 * se + 1e-12)
    # equality for a density that is constant on each cell: p = K^D P on the cell of x
    flat = np.log(K) * L.shape[1] + log_P
    assert np.allclose(flat - L.shape[1] * np.log(K), log_P)


# ----------------------------------------------------------------------------- binarisation
def test_binarize_threshold_and_stochastic():
    X = np.array([[0.0, 0.5, 0.50001, 1.0]])
    np.testing.assert_array_equal(binarize(X), [[0, 0, 1, 1]])
    assert binarize(X).dtype == np.uint8
    np.testing.assert_array_equal(binarize(X, threshold=0.0), [[0, 1, 1, 1]])
    p = np.repeat(np.array([[0.0, 0.1, 0.5, 0.9, 1.0]]), 20000, axis=0)
    B = binarize(p, method="stochastic", rng=0)
    assert B.dtype == np.uint8 and B.shape == p.shape
    freq = B.mean(0)
    se = np.sqrt(p[0] * (1 - p[0]) / p.shape[0])
    assert freq[0] == 0.0 and freq[-1] == 1.0
    assert np.all(np.abs(freq - p[0]) <= 5 * se)
    np.testing.assert_array_equal(B, binarize(p, method="stochastic", rng=0))
    img = np.full((2, 3, 4), 0.3)
    assert binarize(img, method="stochastic", rng=1).shape == (2, 3, 4)


def test_binarize_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(np.array([[0, 255]]), method="stochastic")
    with pytest.raises(ValueError, match="method"):
        binarize(np.zeros((2, 2)), method="otsu")
    with pytest.raises(ValueError, match="NaN"):
        binarize(np.array([[np.nan, 0.2]]))


# ----------------------------------------------------------------------------- binarised MNIST (real)
def test_load_binarized_mnist_shared_file_and_directory(monkeypatch):
    from _require import shared_datasets_dir

    root = shared_datasets_dir()
    m = load_binarized_mnist(root / "binarized_mnist.npz")
    assert m.train.shape == (50000, 784) and m.valid.shape == (10000, 784) and m.test.shape == (10000, 784)
    for k in m.keys():
        assert m[k].dtype == np.uint8 and set(np.unique(m[k])) == {0, 1}
        assert m[k].flags.c_contiguous  # one image per row in memory, though the file stores columns
    np.testing.assert_array_equal(load_binarized_mnist(root).test, m.test)
    monkeypatch.setenv("PROBGEN_DATA", str(root))
    np.testing.assert_array_equal(load_binarized_mnist().valid, m.valid)


def test_shared_idx_and_binarized_test_set_agree():
    """The static binarisation of the test set is a Bernoulli draw from the IDX test images / 255.

    So each pixel's mean over the 10000 binary images equals the mean grey value up to
    sampling noise with variance sum_n x(1-x) / N^2: an oracle linking the two loaders
    (a wrong IDX offset or byte order would break it).
    """
    from _require import shared_datasets_dir

    root = shared_datasets_dir()
    images = load_mnist_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = load_mnist_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(10))
    i2, l2 = load_mnist(root)
    np.testing.assert_array_equal(i2, images)
    np.testing.assert_array_equal(l2, labels)
    x = images.reshape(10000, 784) / 255.0
    b = load_binarized_mnist(root).test
    se = np.sqrt((x * (1 - x)).sum(0)) / 10000
    ok = se > 0
    z = (b.mean(0) - x.mean(0))[ok] / se[ok]
    assert ok.sum() > 600 and np.abs(z).max() < 5 and abs(z.mean()) < 5 / np.sqrt(ok.sum())


# ----------------------------------------------------------------------------- npz / amat written here
def _small(rng, d=784):
    return {k: (rng.random((n, d)) < 0.3).astype(np.uint8) for k, n in (("train", 6), ("valid", 3), ("test", 2))}


def _write_amat(path, arr, sep=" "):
    path.write_text("".join(sep.join(str(v) for v in row) + "\n" for row in arr))


def test_npz_and_amat_round_trip(tmp_path):
    data = _small(np.random.default_rng(0))
    np.savez(tmp_path / "binarized_mnist.npz", **data)
    amat = tmp_path / "amat"
    amat.mkdir()
    for k, v in data.items():
        _write_amat(amat / f"binarized_mnist_{k}.amat", v, sep=" \t" if k == "valid" else " ")
    for source in (tmp_path / "binarized_mnist.npz", tmp_path, amat):
        m = load_binarized_mnist(source)
        for k, v in data.items():
            assert m[k].dtype == np.uint8 and m[k].flags.c_contiguous
            np.testing.assert_array_equal(m[k], v)
    np.savez(tmp_path / "binarized_mnist.npz", **{k: np.asfortranarray(v) for k, v in data.items()})
    m = load_binarized_mnist(tmp_path)
    assert all(m[k].flags.c_contiguous for k in m.keys())
    (amat / "binarized_mnist_test.amat").write_text(
        "".join(" ".join(f"{v:.1f}" for v in row) + "\n" for row in data["test"]))
    np.testing.assert_array_equal(load_binarized_mnist(amat).test, data["test"])


@pytest.mark.parametrize("problem, arrays, match", [
    ("missing key", lambda d: {"train": d["train"], "test": d["test"]}, r"missing key.*valid"),
    ("1-D", lambda d: {**d, "valid": d["valid"].ravel()}, r"'valid' has shape"),
    ("width", lambda d: {**d, "train": d["train"][:, :700]}, r"'train' has shape \(6, 700\)"),
    ("non-binary", lambda d: {**d, "test": d["test"] * 2}, r"'test' is not binary"),
    ("object", lambda d: {**d, "train": np.array([[1, None]], dtype=object)}, r"binarized_mnist\.npz"),
])
def test_malformed_npz_is_a_clear_error(tmp_path, problem, arrays, match):
    f = tmp_path / "binarized_mnist.npz"
    np.savez(f, **arrays(_small(np.random.default_rng(1))))
    with pytest.raises(ValueError, match=match) as info:
        load_binarized_mnist(f)
    assert str(f) in str(info.value)


def test_truncated_or_foreign_npz(tmp_path):
    f = tmp_path / "binarized_mnist.npz"
    np.savez(f, **_small(np.random.default_rng(2)))
    f.write_bytes(f.read_bytes()[:-200])
    with pytest.raises(ValueError, match="binarized_mnist.npz"):
        load_binarized_mnist(f)
    g = tmp_path / "text.npz"
    g.write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        load_binarized_mnist(g)
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("train.npy", b"not an npy header")
    with pytest.raises(ValueError, match="other.npz"):
        load_binarized_mnist(tmp_path / "other.npz")


@pytest.mark.parametrize("text, match", [
    ("0 1 0\n0 1\n", r"line 2 has 2 values, expected 3"),
    ("0 1 0\n0 2 1\n", r"line 2 is not a row of 0/1"),
    ("0 1 0\n0 a 1\n", r"line 2 is not a row of 0/1"),
    ("0 1 0\n0 0.5 1\n", r"line 2 is not a row of 0/1"),
    ("\n\n", r"no data rows"),
])
def test_malformed_amat_is_a_clear_error(tmp_path, text, match):
    for k in ("train", "valid", "test"):
        (tmp_path / f"binarized_mnist_{k}.amat").write_text("1 0 1\n")
    (tmp_path / "binarized_mnist_valid.amat").write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_binarized_mnist(tmp_path, n_features=None)
    assert "binarized_mnist_valid.amat" in str(info.value)
    with pytest.raises(ValueError, match="expected 784"):
        load_binarized_mnist(tmp_path)


def test_missing_paths(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_binarized_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_binarized_mnist(tmp_path)
    monkeypatch.delenv("PROBGEN_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="PROBGEN_DATA"):
        load_binarized_mnist()
    with pytest.raises(FileNotFoundError, match="nothing.idx"):
        load_mnist_idx(tmp_path / "nothing.idx")
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        load_mnist(tmp_path)


# ----------------------------------------------------------------------------- IDX written here
def _idx_bytes(arr, code):
    """An independent IDX writer: 0, 0, dtype code, ndim, big-endian uint32 dims, big-endian data."""
    be = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + np.ascontiguousarray(arr, dtype=be).tobytes()


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code, dtype, shape", [
    (0x08, np.uint8, (5, 28, 28)), (0x08, np.uint8, (7,)), (0x09, np.int8, (3, 4)),
    (0x0B, np.int16, (2, 3)), (0x0C, np.int32, (4,)), (0x0D, np.float32, (2, 2, 2)), (0x0E, np.float64, (3,)),
])
def test_idx_round_trip(tmp_path, gz, code, dtype, shape):
    rng = np.random.default_rng(code)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    arr = (rng.integers(info.min, info.max, size=shape, endpoint=True) if info else rng.normal(size=shape)).astype(dtype)
    raw = _idx_bytes(arr, code)
    f = tmp_path / ("x.idx.gz" if gz else "x.idx")
    f.write_bytes(gzip.compress(raw) if gz else raw)
    out = load_mnist_idx(f)
    assert out.shape == shape and out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_load_mnist_finds_standard_names(tmp_path):
    imgs = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28).astype(np.uint8)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(_idx_bytes(imgs, 0x08))
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.array([3, 1, 4], np.uint8), 0x08)))
    i, l = load_mnist(tmp_path, kind="train")
    np.testing.assert_array_equal(i, imgs)
    np.testing.assert_array_equal(l, [3, 1, 4])
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.array([3, 1], np.uint8), 0x08)))
    with pytest.raises(ValueError, match="do not match"):
        load_mnist(tmp_path, kind="train")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("mutate, match", [
    (lambda b: b"\x01" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX dtype code 0x07"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b[:9], "truncated IDX header"),
    (lambda b: b"", "bad magic"),
])
def test_malformed_idx_is_a_clear_error(tmp_path, gz, mutate, match):
    raw = mutate(_idx_bytes(np.zeros((2, 4, 4), np.uint8), 0x08))
    f = tmp_path / "bad.idx"
    f.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError, match=match) as info:
        load_mnist_idx(f)
    assert "bad.idx" in str(info.value)


def test_corrupt_gzip_idx(tmp_path):
    good = gzip.compress(_idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10), 0x08))
    f = tmp_path / "cut.gz"
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="cut.gz"):
        load_mnist_idx(f)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    f.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="cut.gz"):
        load_mnist_idx(f)
