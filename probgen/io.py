"""Saving and loading: one ``.npz`` holding named arrays plus a JSON config; RNG state as JSON.

The format is a plain NumPy ``.npz`` (a zip of ``.npy`` members) so it opens anywhere
with ``np.load(path, allow_pickle=False)``.  The JSON config travels inside it as a
uint8 array under the reserved key ``__config__``, wrapped with a format name and
version and the list of array names, so a foreign ``.npz`` is recognised as such.

Writes are atomic: the file is written to a temporary sibling, flushed and fsynced,
then moved over the target with ``os.replace``; a crash at any point leaves either the
old file or the new one, never a mixture.  Loads check every member's CRC-32 before
parsing, so a truncated or corrupted file is a ``ValueError`` naming the path, not
garbage numbers.  Nothing is ever pickled.
"""
from __future__ import annotations

import json
import numbers
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["save_npz_json", "load_npz_json", "rng_state", "set_rng_state", "CONFIG_KEY", "FORMAT_VERSION"]

CONFIG_KEY = "__config__"
FORMAT_NAME = "probgen-npz-json"
FORMAT_VERSION = 1


def _json_default(obj):
    """JSON encoder fallback for NumPy scalars (anything else is an error)."""
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"config holds a {type(obj).__name__} ({obj!r}), which is not JSON-serialisable")


def _check_arrays(arrays) -> dict[str, np.ndarray]:
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> ndarray, got {type(arrays).__name__}")
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"array names must be non-empty strings, got {name!r}")
        if name.startswith("__") or "/" in name or "\\" in name or "\x00" in name:
            raise ValueError(f"array name {name!r} is not allowed (no leading '__', no slashes)")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(
                f"array {name!r} has dtype {arr.dtype}, which would need pickling; "
                "only numeric/bool/string arrays can be saved"
            )
        out[name] = arr
    return out


def save_npz_json(path, arrays: dict, config: dict | None = None, *, compress: bool = False) -> Path:
    """Atomically write ``arrays`` and the JSON-serialisable ``config`` to one ``.npz`` file.

    Parameters
    ----------
    path : str or Path
        Target file (its directory must exist).  Written exactly at this name.
    arrays : dict of str -> ndarray
        Names must not start with ``"__"`` (reserved).  Object arrays are refused.
    config : dict or None
        JSON-serialisable (NumPy scalars are converted); NaN/inf are refused.
    compress : bool
        Deflate the members (smaller, slower).

    Returns
    -------
    Path of the written file.
    """
    path = Path(path)
    arrays = _check_arrays(arrays)
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "arrays": sorted(arrays), "config": config}
    try:
        text = json.dumps(header, default=_json_default, allow_nan=False, sort_keys=True)
    except ValueError as exc:
        raise ValueError(f"config is not valid JSON ({exc}); NaN and inf are not allowed") from None
    members = dict(arrays)
    members[CONFIG_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"directory does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **members)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


def _file_mode(path: Path) -> int:
    """Permissions for the new file: the old file's, else what ``open()`` would give (0o666 & ~umask).

    (``mkstemp`` creates 0o600 files; without this a save would silently make the file private.)
    """
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); best effort where directories cannot be opened."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def load_npz_json(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by :func:`save_npz_json`: ``(arrays, config)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated, corrupted (CRC mismatch), not a probgen file, or of a
        newer format version; the message names the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every member and checks its CRC-32
            names = zf.namelist()
        if bad is not None:
            raise ValueError(f"member {bad!r} fails its CRC check")
        if f"{CONFIG_KEY}.npy" not in names:
            raise ValueError(f"no {CONFIG_KEY!r} entry: not a probgen file")
        with np.load(path, allow_pickle=False) as z:
            raw = z[CONFIG_KEY]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ValueError(f"{CONFIG_KEY!r} entry has dtype {raw.dtype}, shape {raw.shape}")
            header = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                raise ValueError("not a probgen file (format tag missing)")
            version = header.get("version")
            if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
                raise ValueError(f"format version {version!r} is not supported (this probgen reads 1..{FORMAT_VERSION})")
            listed = header.get("arrays")
            stored = sorted(k for k in z.files if k != CONFIG_KEY)
            if not isinstance(listed, list) or sorted(listed) != stored:
                raise ValueError(f"arrays {stored} do not match the list in the header {listed!r}")
            config = header.get("config")
            if not isinstance(config, dict):
                raise ValueError("config in the header is not a JSON object")
            arrays = {k: z[k] for k in stored}
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile, zlib, numpy header parsing, JSON, UTF-8: all mean "bad file"
        raise ValueError(f"{path}: unreadable or corrupt probgen file: {type(exc).__name__}: {exc}") from None
    return arrays, config


# --------------------------------------------------------------------------- RNG state
def _encode(value):
    """JSON-safe copy of a bit-generator state: ints become decimal strings (128-bit safe)."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"unexpected array of dtype {value.dtype} in an RNG state")
        return {"__ndarray__": [str(int(v)) for v in value.ravel()], "dtype": value.dtype.str,
                "shape": list(value.shape)}
    if isinstance(value, bool):
        return value
    if isinstance(value, (numbers.Integral, np.integer)):
        return {"__int__": str(int(value))}
    if isinstance(value, str):
        return value
    raise TypeError(f"unexpected {type(value).__name__} in an RNG state")


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__int__"}:
            return int(value["__int__"])
        if "__ndarray__" in value:
            dt = np.dtype(value["dtype"])
            return np.array([int(v) for v in value["__ndarray__"]], dtype=dt).reshape(value["shape"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def rng_state(gen: np.random.Generator) -> dict:
    """The full state of ``gen`` as a JSON-safe dict (every integer a decimal string).

    Works for every NumPy bit generator (PCG64's 128-bit ints, MT19937's key array, ...).
    ``set_rng_state(g, rng_state(gen))`` makes ``g`` produce exactly the draws ``gen`` would.
    """
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"gen must be a numpy.random.Generator, got {type(gen).__name__}")
    return _encode(gen.bit_generator.state)


def set_rng_state(gen: np.random.Generator, state: dict) -> np.random.Generator:
    """Restore a state from :func:`rng_state` (or a raw ``bit_generator.state`` dict) into ``gen``."""
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"gen must be a numpy.random.Generator, got {type(gen).__name__}")
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from rng_state(), got {type(state).__name__}")
    want = type(gen.bit_generator).__name__
    got = state.get("bit_generator")
    if got != want:
        raise ValueError(f"state is for bit generator {got!r}, but gen uses {want!r}")
    try:
        gen.bit_generator.state = _decode(state)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"invalid {want} state: {type(exc).__name__}: {exc}") from None
    return gen
