"""Weight initialisation from an explicit random generator.

Every initialiser draws in float64 from ``rng`` (None, int seed or
``numpy.random.Generator``) and casts to ``dtype`` afterwards, so a float32
network starts from exactly the float64 network's weights rounded to float32,
and a seed reproduces the same weights in either precision.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_dtype, check_option, check_positive_int, check_rng

__all__ = ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "INITIALIZERS", "initialize"]


def _fans(fan_in, fan_out):
    return check_positive_int(fan_in, "fan_in"), check_positive_int(fan_out, "fan_out")


def glorot_uniform(fan_in: int, fan_out: int, rng=None, dtype=np.float64) -> np.ndarray:
    """:math:`W_{ij} \\sim U(-a, a)`, :math:`a = \\sqrt{6/(I+O)}` ``[eq:glorot]``.

    Returns
    -------
    W : ndarray of shape (fan_in, fan_out)
    """
    fan_in, fan_out = _fans(fan_in, fan_out)
    a = np.sqrt(6.0 / (fan_in + fan_out))  # [eq:glorot]
    return check_rng(rng).uniform(-a, a, size=(fan_in, fan_out)).astype(check_dtype(dtype))


def glorot_normal(fan_in: int, fan_out: int, rng=None, dtype=np.float64) -> np.ndarray:
    """:math:`W_{ij} \\sim N(0, 2/(I+O))` ``[eq:glorot]``; shape (fan_in, fan_out)."""
    fan_in, fan_out = _fans(fan_in, fan_out)
    std = np.sqrt(2.0 / (fan_in + fan_out))  # [eq:glorot]
    return (std * check_rng(rng).standard_normal((fan_in, fan_out))).astype(check_dtype(dtype))


def he_uniform(fan_in: int, fan_out: int, rng=None, dtype=np.float64) -> np.ndarray:
    """:math:`W_{ij} \\sim U(-a, a)`, :math:`a = \\sqrt{6/I}` ``[eq:he]``; shape (fan_in, fan_out)."""
    fan_in, fan_out = _fans(fan_in, fan_out)
    a = np.sqrt(6.0 / fan_in)  # [eq:he]
    return check_rng(rng).uniform(-a, a, size=(fan_in, fan_out)).astype(check_dtype(dtype))


def he_normal(fan_in: int, fan_out: int, rng=None, dtype=np.float64) -> np.ndarray:
    """:math:`W_{ij} \\sim N(0, 2/I)` ``[eq:he]``; shape (fan_in, fan_out)."""
    fan_in, fan_out = _fans(fan_in, fan_out)
    std = np.sqrt(2.0 / fan_in)  # [eq:he]
    return (std * check_rng(rng).standard_normal((fan_in, fan_out))).astype(check_dtype(dtype))


INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
}


def initialize(name: str, fan_in: int, fan_out: int, rng=None, dtype=np.float64) -> np.ndarray:
    """Dispatch on ``name`` (a key of :data:`INITIALIZERS`)."""
    check_option(name, "init", tuple(INITIALIZERS))
    return INITIALIZERS[name](fan_in, fan_out, rng, dtype)
