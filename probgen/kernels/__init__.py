"""Numba kernels, each beside the plain-NumPy ``*_reference`` twin that defines its meaning."""
from .responsibilities import (
    mixture_log_prob_reference,
    mixture_responsibilities,
    mixture_responsibilities_reference,
    normalize_log_prob,
    normalize_log_prob_reference,
    weighted_diag_scatter,
    weighted_diag_scatter_reference,
)

__all__ = [
    "normalize_log_prob",
    "normalize_log_prob_reference",
    "mixture_responsibilities",
    "mixture_responsibilities_reference",
    "mixture_log_prob_reference",
    "weighted_diag_scatter",
    "weighted_diag_scatter_reference",
]
