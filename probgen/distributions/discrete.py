"""Bernoulli and categorical log-probabilities from logits, in overflow-free form.

Derivations: ``docs/mle.md`` (section on discrete likelihoods).  Nothing here
forms a probability and then takes its log: every log-probability is a
softplus or a log-softmax of the logits, finite for logits up to about
:math:`\\pm 10^{300}`.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_array
from ._linalg import _float_dtype

__all__ = ["softplus", "log_softmax", "bernoulli_log_prob", "categorical_log_prob"]


def softplus(x) -> np.ndarray:
    """:math:`\\log(1 + e^x)` without overflow  ``[eq:softplus]``.

    Computed as :math:`\\max(x, 0) + \\operatorname{log1p}(e^{-|x|})`.  Assumes a
    float array (no validation; a building block for the public functions).
    """
    x = np.asarray(x)
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))  # [eq:softplus]


def log_softmax(logits, axis: int = -1) -> np.ndarray:
    """:math:`\\ell_k - \\log\\sum_j e^{\\ell_j}` along ``axis`` with a max shift  ``[eq:log-softmax]``.

    Assumes a finite float array (no validation).
    """
    logits = np.asarray(logits)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))  # [eq:log-softmax]


def bernoulli_log_prob(x, logits) -> np.ndarray:
    """Elementwise :math:`\\log \\mathrm{Bern}(x \\mid \\sigma(\\ell))` from logits :math:`\\ell`.

    Parameters
    ----------
    x : array_like
        Outcomes in [0, 1].  Binary data give the Bernoulli log-probability;
        fractional values (grey-level targets) give minus the binary
        cross-entropy, which is what a Bernoulli decoder optimises on such data.
    logits : array_like, broadcastable with ``x``
        :math:`\\ell = \\log\\frac{p}{1-p}`; any finite value.

    Returns
    -------
    log_prob : ndarray of the broadcast shape
        In nats; float32 only when both inputs are float32.

    Notes
    -----
    ``[eq:bernoulli-logits]``:
    :math:`\\log p(x\\mid\\ell) = -\\big(x\\,\\mathrm{softplus}(-\\ell) + (1-x)\\,\\mathrm{softplus}(\\ell)\\big)`.
    Both terms are non-negative, so nothing cancels: the result is finite and
    accurate for logits of any finite size (e.g. :math:`\\pm 10^4`).
    """
    x = check_array(x, "x", ndim=None, dtype=None, min_rows=0)
    logits = check_array(logits, "logits", ndim=None, dtype=None, min_rows=0)
    try:
        np.broadcast_shapes(x.shape, logits.shape)
    except ValueError:
        raise ValueError(
            f"x and logits must broadcast together, got shapes {x.shape} and {logits.shape}"
        ) from None
    if x.size and (np.min(x) < 0 or np.max(x) > 1):
        raise ValueError(
            f"x must lie in [0, 1] for a Bernoulli likelihood, got values in "
            f"[{float(np.min(x)):.3g}, {float(np.max(x)):.3g}]"
        )
    dtype = _float_dtype(x, logits)
    x, logits = x.astype(dtype, copy=False), logits.astype(dtype, copy=False)
    return -(x * softplus(-logits) + (1 - x) * softplus(logits))  # [eq:bernoulli-logits]


def categorical_log_prob(labels, logits) -> np.ndarray:
    """:math:`\\log \\mathrm{Cat}(y \\mid \\operatorname{softmax}(\\ell))` for integer labels.

    Parameters
    ----------
    labels : array_like of int, shape (...)
        Class indices in ``[0, K)``.
    logits : array_like of shape (..., K)
        Unnormalised log-probabilities; same leading shape as ``labels``.

    Returns
    -------
    log_prob : ndarray of shape (...)
        :math:`\\ell_{y} - \\log\\sum_k e^{\\ell_k}` in nats  ``[eq:categorical-logits]``.
    """
    labels_arr = np.asarray(labels)
    if labels_arr.dtype == np.bool_ or not np.issubdtype(labels_arr.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels_arr.dtype}")
    logits = check_array(logits, "logits", ndim=None, dtype=None, min_rows=0)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have a last axis of K >= 1 classes, got shape {logits.shape}")
    if logits.shape[:-1] != labels_arr.shape:
        raise ValueError(
            f"labels shape {labels_arr.shape} must equal logits shape without its last axis, "
            f"got logits shape {logits.shape}"
        )
    K = logits.shape[-1]
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() >= K):
        raise ValueError(
            f"labels must lie in [0, {K}) for K={K} classes, got values in "
            f"[{int(labels_arr.min())}, {int(labels_arr.max())}]"
        )
    log_p = log_softmax(logits, axis=-1)
    idx = labels_arr.astype(np.intp)[..., None]
    return np.take_along_axis(log_p, idx, axis=-1)[..., 0]  # [eq:categorical-logits]
