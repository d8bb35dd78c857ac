"""Losses as forward/backward pairs, one value per example.

Reduction (the same for every loss here): a loss consumes the **last axis**
and returns one value per remaining index, so a prediction of shape (N, D)
gives a vector of shape (N,), and (L, N, D) gives (L, N).  The caller reduces
(``value.mean()``, a sum, a weighting) and passes the matching upstream
gradient ``dvalue`` of the *value's* shape to the backward, e.g.
``np.full(N, 1 / N)`` for a batch mean.  Per-example values are what a model
needs for ``score_samples`` and ELBOs anyway.

* :func:`bernoulli_nll_forward`, :func:`gaussian_nll_forward` and
  :func:`categorical_nll_forward` are negative log-likelihoods in nats,
  summed over the last axis (independent features: log-likelihoods add).
* :func:`mse_forward` is the mean of squared errors over the last axis
  (torch's ``mse_loss(reduction="none").mean(-1)``).

Each backward returns gradients for the prediction arguments only (never the
target) and checks ``dvalue.shape == value.shape``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ._checks import check_cache, float_array, same_dtype, target_array, upstream
from .functional import sigmoid

__all__ = [
    "bernoulli_nll_forward",
    "bernoulli_nll_backward",
    "gaussian_nll_forward",
    "gaussian_nll_backward",
    "mse_forward",
    "mse_backward",
    "categorical_nll_forward",
    "categorical_nll_backward",
]

LOG_2PI = float(np.log(2.0 * np.pi))


def _pred(a, name: str) -> np.ndarray:
    a = float_array(a, name)
    if a.ndim < 1:
        raise ValueError(f"{name} must have at least 1 dimension (features last), got a scalar")
    return a


# --------------------------------------------------------------------------- Bernoulli
def bernoulli_nll_forward(logits, x):
    """Bernoulli negative log-likelihood from logits, per example.

    Parameters
    ----------
    logits : ndarray of shape (..., D)
        :math:`\\ell = \\log p/(1-p)`; any finite value (``±1e4`` included).
    x : array_like of shape (..., D)
        Targets in [0, 1] (binary data; bool/int are cast to the logits' dtype).

    Returns
    -------
    value : ndarray of shape (...)
        :math:`\\sum_d \\operatorname{softplus}(\\ell_d) - x_d \\ell_d`
        ``[eq:bernoulli-nll-logits]``, in nats; same dtype as ``logits``.
    cache : tuple

    Notes
    -----
    Equals torch's ``binary_cross_entropy_with_logits(logits, x,
    reduction="none").sum(-1)``.
    """
    logits = _pred(logits, "logits")
    x = target_array(x, "x", logits.dtype, logits.shape)
    t = np.abs(logits)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    t += np.maximum(logits, 0)  # softplus  [eq:softplus-stable]
    t -= x * logits  # [eq:bernoulli-nll-logits]
    return t.sum(axis=-1), ("bernoulli_nll", logits, x)


def bernoulli_nll_backward(dvalue, cache):
    """Gradient :math:`\\partial/\\partial\\ell = (\\sigma(\\ell) - x)\\, dvalue` ``[eq:bernoulli-nll-grad]``.

    Parameters
    ----------
    dvalue : ndarray of shape (...)
        Upstream gradient of the per-example values.
    cache : tuple

    Returns
    -------
    d_logits : ndarray of shape (..., D)
    """
    logits, x = check_cache(cache, "bernoulli_nll", 2)
    dvalue = upstream(dvalue, logits.shape[:-1], logits.dtype, "dvalue")
    d = sigmoid(logits)
    d -= x
    d *= dvalue[..., None]  # [eq:bernoulli-nll-grad]
    return d


# --------------------------------------------------------------------------- Gaussian
def gaussian_nll_forward(x, mean, log_var):
    """Diagonal-Gaussian negative log-likelihood, per example.

    Parameters
    ----------
    x : array_like of shape (..., D)
        Targets.
    mean : ndarray of shape (..., D)
    log_var : ndarray or float, broadcastable to ``mean.shape``
        Log-variance (never a log-std): shape (..., D) for a variance per
        output, (D,) per feature shared by all examples, (..., 1) per example,
        or a scalar.  For a *fixed* variance :math:`s^2`, pass
        ``np.log(s**2)`` and ignore its gradient.  A Python float is taken in
        ``mean``'s dtype; arrays must match it.

    Returns
    -------
    value : ndarray of shape (...)
        :math:`\\tfrac12\\sum_d [\\log 2\\pi + v_d + (x_d-\\mu_d)^2 e^{-v_d}]`
        ``[eq:gaussian-nll]``, in nats.
    cache : tuple

    Notes
    -----
    Equals torch's ``gaussian_nll_loss(mean, x, exp(log_var), full=True,
    reduction="none")`` summed over the last axis, whenever torch's clamp
    ``var >= 1e-6`` is inactive.  Finite while :math:`e^{-v}` is (``log_var``
    above about -88 in float32 and -709 in float64); models keep a floor.
    """
    mean = _pred(mean, "mean")
    x = target_array(x, "x", mean.dtype, mean.shape)
    if isinstance(log_var, (numbers.Real, np.floating)) and not isinstance(log_var, (bool, np.bool_)):
        log_var = np.asarray(log_var, dtype=mean.dtype)
    log_var = float_array(log_var, "log_var")
    same_dtype(mean.dtype, log_var=log_var)
    try:
        if np.broadcast_shapes(log_var.shape, mean.shape) != mean.shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"log_var of shape {log_var.shape} must broadcast to mean's shape {mean.shape} "
            "without enlarging it"
        ) from None
    diff = x - mean
    inv_var = np.exp(-log_var)
    sq = diff * diff
    sq *= inv_var  # (x - mu)^2 / var
    t = sq + log_var
    t += LOG_2PI
    value = t.sum(axis=-1)
    value *= 0.5  # [eq:gaussian-nll]
    return value, ("gaussian_nll", diff, inv_var, sq, log_var.shape)


def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``g`` over the axes that broadcasting added or stretched to reach ``g.shape``."""
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def gaussian_nll_backward(dvalue, cache):
    """Gradients of :func:`gaussian_nll_forward` ``[eq:gaussian-nll-grad]``.

    Parameters
    ----------
    dvalue : ndarray of shape (...)
    cache : tuple

    Returns
    -------
    d_mean : ndarray of shape (..., D)
        :math:`-(x-\\mu)\\,e^{-v}\\, dvalue`.
    d_log_var : ndarray of the shape of ``log_var``
        :math:`\\tfrac12(1 - (x-\\mu)^2 e^{-v})\\, dvalue`, summed over the
        axes along which ``log_var`` was broadcast (a 0-d array for a scalar).
    """
    diff, inv_var, sq, lv_shape = check_cache(cache, "gaussian_nll", 4)
    dvalue = upstream(dvalue, diff.shape[:-1], diff.dtype, "dvalue")
    dv = dvalue[..., None]
    d_mean = diff * inv_var
    d_mean *= dv
    np.negative(d_mean, out=d_mean)  # [eq:gaussian-nll-grad]
    d_log_var = 1 - sq
    d_log_var *= dv
    d_log_var *= 0.5  # [eq:gaussian-nll-grad]
    return d_mean, _unbroadcast(d_log_var, lv_shape)


# --------------------------------------------------------------------------- MSE
def mse_forward(pred, target):
    """Mean squared error over the last axis, per example ``[eq:mse]``.

    Parameters
    ----------
    pred : ndarray of shape (..., D)
    target : array_like of shape (..., D)

    Returns
    -------
    value : ndarray of shape (...)
        :math:`\\frac1D\\sum_d (\\hat x_d - x_d)^2`.
    cache : tuple
    """
    pred = _pred(pred, "pred")
    target = target_array(target, "target", pred.dtype, pred.shape)
    diff = pred - target
    value = np.einsum("...d,...d->...", diff, diff)
    value /= pred.shape[-1]  # [eq:mse]
    return value, ("mse", diff)


def mse_backward(dvalue, cache):
    """:math:`\\partial/\\partial\\hat x = \\frac2D(\\hat x - x)\\, dvalue` ``[eq:mse-grad]``; shape (..., D)."""
    (diff,) = check_cache(cache, "mse", 1)
    dvalue = upstream(dvalue, diff.shape[:-1], diff.dtype, "dvalue")
    d = diff * (2.0 / diff.shape[-1])
    d *= dvalue[..., None]  # [eq:mse-grad]
    return d


# --------------------------------------------------------------------------- categorical
def categorical_nll_forward(logits, labels):
    """Categorical negative log-likelihood from logits (softmax cross-entropy), per example.

    Parameters
    ----------
    logits : ndarray of shape (..., K)
        Unnormalised log-probabilities over the last axis; any finite values.
    labels : array_like of int, shape (...)
        Class indices in ``[0, K)``.

    Returns
    -------
    value : ndarray of shape (...)
        :math:`\\log\\sum_k e^{\\ell_k} - \\ell_y` ``[eq:categorical-nll]``.
    cache : tuple

    Notes
    -----
    Equals torch's ``cross_entropy(logits, labels, reduction="none")`` (with
    the class axis moved last).
    """
    logits = _pred(logits, "logits")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    K = logits.shape[-1]
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have shape {logits.shape[:-1]} (logits without the class axis), "
                         f"got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels must lie in [0, {K}), got values in [{labels.min()}, {labels.max()}]")
    m = logits.max(axis=-1, keepdims=True)
    log_p = logits - m
    lse = np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
    log_p -= lse  # log-softmax  [eq:log-softmax]
    value = -np.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]  # [eq:categorical-nll]
    return value, ("categorical_nll", log_p, labels)


def categorical_nll_backward(dvalue, cache):
    """:math:`\\partial/\\partial\\ell = (\\operatorname{softmax}(\\ell) - \\text{onehot}(y))\\, dvalue` ``[eq:categorical-nll-grad]``."""
    log_p, labels = check_cache(cache, "categorical_nll", 2)
    dvalue = upstream(dvalue, log_p.shape[:-1], log_p.dtype, "dvalue")
    d = np.exp(log_p)
    np.put_along_axis(d, labels[..., None],
                      np.take_along_axis(d, labels[..., None], axis=-1) - 1, axis=-1)
    d *= dvalue[..., None]  # [eq:categorical-nll-grad]
    return d
