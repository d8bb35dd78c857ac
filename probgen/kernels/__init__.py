"""Numba kernels, each beside the plain-NumPy ``*_reference`` twin that defines its meaning."""
from .codebook import nearest_codebook, nearest_codebook_reference
from .masked_conv import (
    masked_conv2d_backward,
    masked_conv2d_backward_reference,
    masked_conv2d_forward,
    masked_conv2d_forward_reference,
)
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
    "masked_conv2d_forward",
    "masked_conv2d_backward",
    "masked_conv2d_forward_reference",
    "masked_conv2d_backward_reference",
    "nearest_codebook",
    "nearest_codebook_reference",
]
