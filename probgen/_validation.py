"""Input checks shared by every public function: one place, clear messages.

Public functions call these on their arguments; ``_private`` helpers assume
valid input.  Every error names the argument, and the offending shape or value.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_array",
    "check_rng",
    "check_is_fitted",
    "check_positive_int",
    "check_positive_float",
    "check_nonnegative_float",
    "check_option",
    "check_dtype",
    "NotFittedError",
]


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used before ``fit`` (or ``load``)."""


def check_rng(rng) -> np.random.Generator:
    """Normalise ``rng`` (None, int or Generator) to a ``numpy.random.Generator``."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng must be a non-negative integer seed, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )


def check_dtype(dtype) -> np.dtype:
    """Accept float32 or float64 only (the two precisions probgen computes in)."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def check_array(
    X,
    name: str = "X",
    *,
    ndim: int | tuple[int, ...] | None = 2,
    dtype=np.float64,
    min_rows: int = 1,
    n_features: int | None = None,
    allow_nonfinite: bool = False,
    copy: bool = False,
) -> np.ndarray:
    """Convert ``X`` to a C-contiguous float array and check it.

    Parameters
    ----------
    X : array_like
    name : str
        Name used in error messages.
    ndim : int, tuple of int or None
        Required number of dimensions (None: any).
    dtype : dtype or None
        Target floating dtype; None keeps a float32/float64 input as it is and
        converts anything else to float64.
    min_rows : int
        Minimum size of the first axis.
    n_features : int or None
        Required size of the last axis.
    allow_nonfinite : bool
        If False (default), NaN or inf raise ``ValueError``.
    """
    if isinstance(X, (str, bytes)) or X is None:
        raise TypeError(f"{name} must be a numeric array, got {type(X).__name__}")
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    if dtype is None:
        target = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    else:
        target = check_dtype(dtype)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"{name} must be a {want}-D array, got shape {arr.shape} ({arr.ndim}-D)"
            )
    if arr.ndim >= 1 and arr.shape[0] < min_rows:
        raise ValueError(
            f"{name} must have at least {min_rows} row(s), got shape {arr.shape}"
        )
    if n_features is not None and (arr.ndim == 0 or arr.shape[-1] != n_features):
        raise ValueError(
            f"{name} must have {n_features} features (last axis), got shape {arr.shape}"
        )
    out = np.array(arr, dtype=target, order="C", copy=True) if copy else np.ascontiguousarray(arr, dtype=target)
    if not allow_nonfinite and not np.all(np.isfinite(out)):
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return out


def check_is_fitted(obj, attributes) -> None:
    """Raise ``NotFittedError`` if any of ``attributes`` is missing on ``obj``."""
    if isinstance(attributes, str):
        attributes = (attributes,)
    missing = [a for a in attributes if getattr(obj, a, None) is None]
    if missing:
        raise NotFittedError(
            f"This {type(obj).__name__} is not fitted yet (missing {', '.join(missing)}); "
            "call fit() first"
        )


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive_float(value, name: str) -> float:
    value = _check_real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_nonnegative_float(value, name: str) -> float:
    value = _check_real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_option(value, name: str, options) -> str:
    if value not in options:
        opts = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be one of {opts}, got {value!r}")
    return value
