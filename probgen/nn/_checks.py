"""Cheap argument checks for the forward/backward pairs (private).

The pairs sit on the hot path of every training step, so they check only what
is O(1) to check: array-ness, dtype and shapes.  Finiteness of the data is
checked once at the model boundary (:func:`probgen._validation.check_array`).
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(a, name: str) -> np.ndarray:
    """Return ``a`` as a float32/float64 ndarray (no copy when it already is one)."""
    if isinstance(a, (numbers.Real, np.floating)) and not isinstance(a, (bool, np.bool_)):
        a = np.asarray(a, dtype=np.float64)
    elif not isinstance(a, np.ndarray):
        if a is None or isinstance(a, (str, bytes)):
            raise TypeError(f"{name} must be a float32 or float64 array, got {type(a).__name__}")
        a = np.asarray(a)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {a.dtype}")
    return a


def same_dtype(dtype: np.dtype, **arrays: np.ndarray) -> None:
    """Raise TypeError if any of ``arrays`` has a dtype other than ``dtype``.

    Mixing float32 and float64 would silently up-cast every result, which
    defeats ``dtype=np.float32``; the caller converts once instead.
    """
    for name, a in arrays.items():
        if a.dtype != dtype:
            raise TypeError(
                f"{name} has dtype {a.dtype} but the computation runs in {dtype}; "
                f"convert it with .astype(np.{dtype.name})"
            )


def target_array(x, name: str, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """A loss target: same shape as the prediction; bool/int data are cast to ``dtype``."""
    x = np.asarray(x)
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer):
        x = x.astype(dtype)
    elif x.dtype in FLOAT_DTYPES:
        same_dtype(dtype, **{name: x})
    else:
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (that of the prediction), got {x.shape}")
    return x


def upstream(dy, shape: tuple, dtype: np.dtype, name: str = "dy") -> np.ndarray:
    """Check an upstream gradient against the forward output it belongs to.

    ``dy.shape`` must equal the output's shape exactly: broadcasting a wrong
    shape would silently give a wrong gradient.  A Python scalar is accepted
    for a 0-d output.
    """
    if not isinstance(dy, np.ndarray):
        if isinstance(dy, (numbers.Real, np.floating)) and not isinstance(dy, bool):
            dy = np.asarray(dy, dtype=dtype)
        else:
            dy = float_array(dy, name)
    if dy.shape != shape:
        raise ValueError(
            f"{name} must have the shape of the forward output {shape}, got {dy.shape}"
        )
    if dy.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {dy.dtype} but the forward pass ran in {dtype}; "
            f"convert it with .astype(np.{dtype.name})"
        )
    return dy


def check_cache(cache, kind: str, n: int) -> tuple:
    """The cache must be the tuple that the matching forward returned."""
    if not isinstance(cache, tuple) or len(cache) != n + 1 or cache[0] != kind:
        raise TypeError(f"cache must be the cache returned by {kind}_forward")
    return cache[1:]
