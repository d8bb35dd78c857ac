"""Causal taps, masks and the packed weight layout of :mod:`probgen.kernels.masked_conv` (re-exported there).

Mask A keeps the taps strictly before the centre in raster order ``[eq:mask-a]``, mask B also the
centre ``[eq:mask-b]``; the packed weight (C_out, C_in, T) stores only those taps (``docs/pixelcnn.md``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._validation import check_option, check_positive_int

__all__ = ["causal_taps", "conv_mask", "n_causal_taps", "kernel_size_from_taps", "pack_masked_weight",
           "unpack_masked_weight"]

_MASKS = ("A", "B")


# ----------------------------------------------------------------------------- masks and packing
def _check_kernel(kernel_size, mask_type):
    k = check_positive_int(kernel_size, "kernel_size")
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the mask is centred), got {k}")
    return k, check_option(mask_type, "mask_type", _MASKS)


def n_causal_taps(kernel_size, mask_type) -> int:
    """:math:`T`: taps kept by the mask, :math:`r(k+1)` (A) or :math:`r(k+1)+1` (B), :math:`r=(k-1)/2`."""
    k, mask_type = _check_kernel(kernel_size, mask_type)
    r = k // 2
    return r * (k + 1) + (mask_type == "B")


def kernel_size_from_taps(n_taps, mask_type) -> int:
    """The odd ``k`` with ``n_causal_taps(k, mask_type) == n_taps`` (``ValueError`` if none)."""
    mask_type = check_option(mask_type, "mask_type", _MASKS)
    return _kernel_size(check_positive_int(n_taps, "n_taps", minimum=0), mask_type)


@lru_cache(maxsize=64)
def _kernel_size(n_taps, mask_type) -> int:
    T = n_taps - (mask_type == "B")
    r = int(round((np.sqrt(1 + 2 * max(T, 0)) - 1) / 2))  # T = r (2r + 2)
    if T < 0 or 2 * r * (r + 1) != T:
        raise ValueError(f"{n_taps} taps is not the tap count of a mask-{mask_type} kernel "
                         f"(1x1, 3x3, 5x5, 7x7 have {[n_causal_taps(k, mask_type) for k in (1, 3, 5, 7)]})")
    return 2 * r + 1


def causal_taps(kernel_size, mask_type) -> np.ndarray:
    """Offsets ``(di, dj)`` of the kept taps, raster order: rows above, then left of the centre.

    Returns
    -------
    taps : ndarray of shape (T, 2), int64
        Tap ``t`` multiplies the input at ``(i + di, j + dj)`` for the output at ``(i, j)``
        ``[eq:masked-conv]``; ``di <= 0`` always, and ``dj < 0`` when ``di == 0`` (``dj = 0``
        too for mask B) ``[eq:mask-a]`` ``[eq:mask-b]``.
    """
    taps = _taps(*_check_kernel(kernel_size, mask_type))
    return taps.copy()


@lru_cache(maxsize=64)
def _taps(k, mask_type) -> np.ndarray:
    r = k // 2
    taps = [(di, dj) for di in range(-r, 1) for dj in range(-r, r + 1)
            if di < 0 or dj < 0 or (dj == 0 and mask_type == "B")]
    out = np.array(taps, dtype=np.int64).reshape(-1, 2)
    out.flags.writeable = False
    return out


def conv_mask(kernel_size, mask_type, dtype=np.float64) -> np.ndarray:
    """The dense 0/1 mask :math:`M` of shape (k, k) ``[eq:mask-a]`` ``[eq:mask-b]``."""
    k, _ = _check_kernel(kernel_size, mask_type)
    m = np.zeros((k, k), dtype=dtype)
    taps = causal_taps(k, mask_type)
    m[taps[:, 0] + k // 2, taps[:, 1] + k // 2] = 1
    return m


def pack_masked_weight(W_full, mask_type) -> np.ndarray:
    """Dense (C_out, C_in, k, k) weight -> packed (C_out, C_in, T) causal taps (masked taps dropped)."""
    W_full = np.asarray(W_full)
    if W_full.ndim != 4 or W_full.shape[2] != W_full.shape[3]:
        raise ValueError(f"W_full must have shape (C_out, C_in, k, k), got {W_full.shape}")
    k = W_full.shape[2]
    taps = causal_taps(k, mask_type) + k // 2
    return np.ascontiguousarray(W_full[:, :, taps[:, 0], taps[:, 1]])


def unpack_masked_weight(W, mask_type) -> np.ndarray:
    """Packed (C_out, C_in, T) -> dense (C_out, C_in, k, k) with zeros at the masked taps."""
    W = np.asarray(W)
    if W.ndim != 3:
        raise ValueError(f"W must have shape (C_out, C_in, T), got {W.shape}")
    k = kernel_size_from_taps(W.shape[2], mask_type)
    taps = causal_taps(k, mask_type) + k // 2
    out = np.zeros(W.shape[:2] + (k, k), dtype=W.dtype)
    out[:, :, taps[:, 0], taps[:, 1]] = W
    return out
