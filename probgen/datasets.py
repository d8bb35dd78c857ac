"""Data: the bundled 8x8 digits, statically binarised MNIST, MNIST IDX files; binarisation and dequantisation.

Nothing here downloads anything.  The digits come from the file scikit-learn ships; MNIST is read
from a path the caller gives (argument, ``$PROBGEN_DATA``, or the CLI flag ``--data``).  Malformed
files raise ``ValueError`` naming the file and the problem; a missing path raises
``FileNotFoundError`` naming the path.  See ``docs/data.md``.
"""
from __future__ import annotations

import gzip
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._validation import check_array, check_dtype, check_option, check_positive_int, check_rng

__all__ = [
    "Digits",
    "Splits",
    "load_digits",
    "split",
    "train_test_split",
    "dequantize",
    "binarize",
    "resolve_data_path",
    "load_binarized_mnist",
    "load_mnist_idx",
    "load_mnist",
]

MNIST_NPZ = "binarized_mnist.npz"
AMAT_FILES = {s: f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}


# --------------------------------------------------------------------------- 8x8 digits
@dataclass(frozen=True)
class Digits:
    """scikit-learn's bundled 8x8 digits in the views probgen's models need.

    Attributes
    ----------
    images : ndarray of shape (N, 8, 8), float64 in [0, 1] (grey level / 16)
    X : ndarray of shape (N, 64), float64, ``images`` flattened
    binary : ndarray of shape (N, 64), uint8 in {0, 1}, ``X > binarize_threshold``
    levels : ndarray of shape (N, 64), int64 grey levels 0..16 (17 levels)
    target : ndarray of shape (N,), int64 digit class 0..9
    n_levels : int, the number of grey levels K = 17
    """

    images: np.ndarray
    X: np.ndarray
    binary: np.ndarray
    levels: np.ndarray
    target: np.ndarray
    n_levels: int = 17


def load_digits(binarize_threshold: float = 0.5) -> Digits:
    """Load the 1797 bundled 8x8 digits (no download: the file ships with scikit-learn).

    Parameters
    ----------
    binarize_threshold : float in [0, 1)
        ``binary = (X > binarize_threshold)``, see :func:`binarize`.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    raw = _sk_load_digits()
    levels = np.rint(raw.data).astype(np.int64)
    if levels.min() < 0 or levels.max() > 16 or not np.array_equal(levels, raw.data):
        raise ValueError("scikit-learn's digits are not integer grey levels 0..16 as expected")
    X = levels / 16.0
    return Digits(
        images=X.reshape(-1, 8, 8),
        X=X,
        binary=binarize(X, method="threshold", threshold=binarize_threshold),
        levels=levels,
        target=np.asarray(raw.target, dtype=np.int64),
    )


# --------------------------------------------------------------------------- splitting
def split(n: int, fractions=(0.8, 0.2), rng=None) -> tuple[np.ndarray, ...]:
    """Deterministic random partition of ``range(n)`` into parts of the given fractions.

    Parameters
    ----------
    n : int
        Number of examples.
    fractions : sequence of float
        Positive, summing to 1.  Part sizes are ``floor(f * n)``, the few leftover
        examples going to the parts with the largest remainders (ties: earlier part).
    rng : None, int or numpy.random.Generator
        The same seed gives the same partition.

    Returns
    -------
    parts : tuple of int64 index arrays, one per fraction; together a permutation of ``range(n)``.
    """
    n = check_positive_int(n, "n")
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size < 1 or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError(f"fractions must be a non-empty sequence of positive numbers, got {fractions!r}")
    if abs(f.sum() - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got sum {f.sum()!r}")
    sizes = np.floor(f * n).astype(np.int64)
    order = np.argsort(-(f * n - sizes), kind="stable")
    sizes[order[: n - int(sizes.sum())]] += 1
    if np.any(sizes == 0):
        raise ValueError(f"fractions {tuple(f)} give an empty part for n={n}: {tuple(sizes)}")
    perm = check_rng(rng).permutation(n)
    return tuple(np.split(perm, np.cumsum(sizes)[:-1]))


def train_test_split(*arrays, test_size=0.25, rng=None):
    """Split arrays along their first axis: ``(a_train, a_test, b_train, b_test, ...)``.

    ``test_size`` is a fraction in (0, 1) or a number of rows in [1, N - 1].
    """
    if not arrays:
        raise ValueError("train_test_split needs at least one array")
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0] if arrays[0].ndim else 0
    for i, a in enumerate(arrays):
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(f"array {i} has shape {a.shape}, expected first axis of length {n}")
    if n < 2:
        raise ValueError(f"train_test_split needs at least 2 rows, got {n}")
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, (float, np.floating)) and 0.0 < test_size < 1.0:
        n_test = int(round(float(test_size) * n))
    else:
        raise ValueError(f"test_size must be a fraction in (0, 1) or a row count, got {test_size!r}")
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_size={test_size!r} gives {n_test} test rows out of {n}; need 1..{n - 1}")
    perm = check_rng(rng).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    return tuple(x for a in arrays for x in (a[train], a[test]))


# --------------------------------------------------------------------------- transforms
def dequantize(levels, n_levels: int = 17, rng=None, dtype=np.float64) -> np.ndarray:
    """Uniform dequantisation: ``(levels + u) / n_levels`` with ``u ~ U[0, 1)`` per pixel.

    A density ``p`` on ``[0, 1]^D`` fitted to the result bounds the discrete probability
    of the grey levels: ``log P(levels) >= E_u[log p((levels + u) / K)] - D log K``
    with ``K = n_levels`` [eq:dequantization].

    Parameters
    ----------
    levels : array_like of integers in [0, n_levels - 1], any shape
    n_levels : int
        Number of grey levels K (17 for the 8x8 digits, 256 for 8-bit images).
    rng : None, int or numpy.random.Generator
    dtype : float32 or float64

    Returns
    -------
    Y : ndarray of the shape of ``levels``, values in [0, 1)
    """
    n_levels = check_positive_int(n_levels, "n_levels", minimum=2)
    dtype = check_dtype(dtype)
    L = check_array(levels, "levels", ndim=None, dtype=np.float64)
    if not np.array_equal(L, np.rint(L)) or (L.size and (L.min() < 0 or L.max() > n_levels - 1)):
        raise ValueError(f"levels must be integers in [0, {n_levels - 1}] (n_levels={n_levels})")
    u = check_rng(rng).random(L.shape)
    Y = (L + u) / n_levels  # [eq:dequantized-cell]; bound: [eq:dequantization]
    return Y.astype(dtype, copy=False)


def binarize(X, method: str = "threshold", threshold: float = 0.5, rng=None) -> np.ndarray:
    """Binary pixels from grey ones, as uint8 0/1 of the same shape.

    ``method="threshold"``: ``X > threshold`` (deterministic).
    ``method="stochastic"``: ``X`` is read as Bernoulli means, ``b = [u < X]`` with
    ``u ~ U[0, 1)``, so ``P(b = 1) = X`` exactly; ``X`` must lie in [0, 1].
    Drawing once and keeping the result is *static* binarisation; drawing again every
    epoch is *dynamic* binarisation (see ``docs/data.md``).
    """
    check_option(method, "method", ("threshold", "stochastic"))
    A = check_array(X, "X", ndim=None, dtype=None)
    if method == "threshold":
        if isinstance(threshold, (bool, str)) or not np.isfinite(np.float64(threshold)):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        return (A > threshold).astype(np.uint8)  # [eq:binarize-threshold]
    if A.size and (A.min() < 0 or A.max() > 1):
        raise ValueError(
            f"stochastic binarisation reads X as probabilities, so X must lie in [0, 1]; "
            f"got values in [{A.min()}, {A.max()}] (divide 8-bit pixels by 255)"
        )
    return (check_rng(rng).random(A.shape) < A).astype(np.uint8)  # [eq:binarize-stochastic]


# --------------------------------------------------------------------------- MNIST files
@dataclass(frozen=True)
class Splits:
    """train / valid / test arrays; also indexable as ``splits["train"]``."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def __getitem__(self, key: str) -> np.ndarray:
        check_option(key, "key", ("train", "valid", "test"))
        return getattr(self, key)

    def keys(self):
        return ("train", "valid", "test")


def resolve_data_path(path=None) -> Path:
    """The data location: ``path`` if given, else ``$PROBGEN_DATA``; it must exist."""
    if path is None:
        env = os.environ.get("PROBGEN_DATA", "")
        if not env:
            raise FileNotFoundError(
                "no data path given: pass a path (CLI: --data PATH) or set PROBGEN_DATA to the "
                "directory holding binarized_mnist.npz and mnist/"
            )
        path = env
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data path does not exist: {p}")
    return p


def _binary_split(arr, name: str, where, n_features) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2 or (n_features is not None and a.shape[1] != n_features):
        want = f"(N, {n_features})" if n_features is not None else "(N, D)"
        raise ValueError(f"{where}: '{name}' has shape {a.shape}, expected {want}")
    if a.shape[0] == 0:
        raise ValueError(f"{where}: '{name}' is empty")
    if not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{where}: '{name}' has dtype {a.dtype}, expected 0/1 numbers")
    bad = (a != 0) & (a != 1)
    if np.any(bad):
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{where}: '{name}' is not binary: row {i}, column {j} holds {a[i, j]!r}")
    return np.ascontiguousarray(a, dtype=np.uint8)  # one image per row in memory (the shared npz is column-major)


def _read_npz_splits(file: Path, n_features) -> Splits:
    try:
        with np.load(file, allow_pickle=False) as z:
            missing = [k for k in ("train", "valid", "test") if k not in z.files]
            if missing:
                raise ValueError(f"{file}: missing key(s) {missing}; found {sorted(z.files)}")
            arrays = {k: z[k] for k in ("train", "valid", "test")}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{file}: not a readable .npz file ({exc})") from None
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(str(file)) else f"{file}: {msg}") from None
    out = {k: _binary_split(v, k, file, n_features) for k, v in arrays.items()}
    d = {v.shape[1] for v in out.values()}
    if len(d) != 1:
        raise ValueError(f"{file}: splits disagree on the number of pixels: {sorted(d)}")
    return Splits(**out)


def _read_amat(file: Path, n_features) -> np.ndarray:
    """One Larochelle ``.amat`` file: one image per line, whitespace-separated 0/1 values."""
    rows = []
    with open(file, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            toks = line.split()
            if not toks:
                continue
            if n_features is None:
                n_features = len(toks)
            if len(toks) != n_features:
                raise ValueError(f"{file}: line {lineno} has {len(toks)} values, expected {n_features}")
            joined = b"".join(toks)
            if len(joined) == n_features:  # fast path: single-character tokens
                row = np.frombuffer(joined, dtype=np.uint8) - ord("0")
                ok = bool(np.all(row <= 1))
            else:
                try:
                    row = np.array([float(t) for t in toks])
                except ValueError:
                    ok = False
                else:
                    ok = bool(np.all((row == 0) | (row == 1)))
            if not ok:
                raise ValueError(f"{file}: line {lineno} is not a row of 0/1 values: {line[:60]!r}")
            rows.append(row.astype(np.uint8))
    if not rows:
        raise ValueError(f"{file}: no data rows")
    return np.stack(rows)


def load_binarized_mnist(path=None, n_features: int | None = 784) -> Splits:
    """Statically binarised MNIST (train/valid/test, uint8 0/1), never downloaded.

    Parameters
    ----------
    path : str or Path or None
        The ``.npz`` file (keys ``train``, ``valid``, ``test``), a directory holding
        ``binarized_mnist.npz``, or a directory of Larochelle's ``binarized_mnist_{train,valid,test}.amat``
        text files.  None: ``$PROBGEN_DATA``.
    n_features : int or None
        Required number of pixels per row (784); None accepts any width.

    Returns
    -------
    Splits
        ``train`` (50000, 784), ``valid`` (10000, 784), ``test`` (10000, 784) for the standard files.
    """
    p = resolve_data_path(path)
    if p.is_dir():
        if (p / MNIST_NPZ).is_file():
            p = p / MNIST_NPZ
        elif all((p / f).is_file() for f in AMAT_FILES.values()):
            return Splits(**{s: _read_amat(p / f, n_features) for s, f in AMAT_FILES.items()})
        else:
            raise FileNotFoundError(
                f"{p} holds neither {MNIST_NPZ} nor all of {sorted(AMAT_FILES.values())}"
            )
    return _read_npz_splits(p, n_features)


# IDX: 2 zero bytes, a dtype code, the number of dims, then one big-endian uint32 per dim.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_at_most(fh, n: int) -> bytes:
    """Read up to ``n`` bytes in chunks (a corrupt header must not make us allocate ``n`` at once)."""
    chunks, left = [], n
    while left > 0:
        chunk = fh.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def load_mnist_idx(path) -> np.ndarray:
    """Read one IDX file (gzipped or not, detected from the gzip magic bytes).

    Returns the array in native byte order with the shape stored in the header, e.g.
    uint8 (N, 28, 28) for an image file and uint8 (N,) for a label file.  A bad magic
    number, an unknown dtype code, or a data size that does not match the dims is a
    ``ValueError`` naming the file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"IDX file not found: {p}")
    with open(p, "rb") as raw:
        is_gz = raw.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open(p, "rb") if is_gz else open(p, "rb")) as fh:
            head = fh.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00":
                raise ValueError(f"{p}: not an IDX file (bad magic number {head.hex() or 'empty'})")
            code, ndim = head[2], head[3]
            if code not in _IDX_DTYPES:
                raise ValueError(f"{p}: unknown IDX dtype code 0x{code:02x}")
            if ndim == 0:
                raise ValueError(f"{p}: IDX header declares 0 dimensions")
            dims_raw = fh.read(4 * ndim)
            if len(dims_raw) != 4 * ndim:
                raise ValueError(f"{p}: truncated IDX header ({ndim} dims declared)")
            dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))
            dt = np.dtype(_IDX_DTYPES[code])
            nbytes = int(np.prod(dims, dtype=object)) * dt.itemsize
            data = _read_at_most(fh, nbytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{p}: corrupt gzip stream ({exc})") from None
    if len(data) != nbytes:
        what = "truncated" if len(data) < nbytes else "has trailing bytes"
        raise ValueError(f"{p}: data {what}: header dims {dims} need {nbytes} bytes of {dt.str}")
    return np.frombuffer(data, dtype=dt).reshape(dims).astype(dt.newbyteorder("="))


def load_mnist(path=None, kind: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 28, 28) and labels (N,) from the standard IDX file names.

    ``path`` is a directory holding ``{kind}-images-idx3-ubyte[.gz]`` and
    ``{kind}-labels-idx1-ubyte[.gz]`` (or its ``mnist/`` sub-directory); None: ``$PROBGEN_DATA``.
    ``kind`` is ``"t10k"`` (test set) or ``"train"``.
    """
    check_option(kind, "kind", ("t10k", "train"))
    root = resolve_data_path(path)
    out = []
    for stem in (f"{kind}-images-idx3-ubyte", f"{kind}-labels-idx1-ubyte"):
        cands = [d / (stem + ext) for d in (root, root / "mnist") for ext in ("", ".gz")]
        found = next((c for c in cands if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{stem}[.gz] not found in {root} or {root / 'mnist'}")
        out.append(load_mnist_idx(found))
    images, labels = out
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST in {root}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels
