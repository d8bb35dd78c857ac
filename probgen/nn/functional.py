"""Forward/backward pairs as pure functions: linear map and activations.

Every pair follows one contract (derived in ``docs/nn.md``):

* ``y, cache = <op>_forward(x, ...)`` computes the output and an opaque
  ``cache`` holding what the backward pass needs;
* ``dx = <op>_backward(dy, cache)`` returns the vector-Jacobian product
  :math:`\\partial L/\\partial x` given :math:`dy = \\partial L/\\partial y`
  ``[eq:vjp]``.  ``dy`` must have exactly the shape and dtype of ``y``
  (``ValueError`` / ``TypeError`` otherwise): a broadcast upstream gradient
  is always a bug.

Nothing here mutates its inputs, and the dtype is preserved: float32 in,
float32 out.  Mixing float32 and float64 arguments raises ``TypeError``.

The stable scalar maps :func:`sigmoid`, :func:`softplus`, :func:`logsumexp`
and :func:`log_softmax` are public too; the losses live in
:mod:`probgen.nn.losses`.
"""
from __future__ import annotations

import numbers

import numpy as np

from ._checks import check_cache, float_array, same_dtype, upstream

__all__ = [
    "sigmoid",
    "softplus",
    "logsumexp",
    "log_softmax",
    "linear_forward",
    "linear_backward",
    "relu_forward",
    "relu_backward",
    "leaky_relu_forward",
    "leaky_relu_backward",
    "tanh_forward",
    "tanh_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "softplus_forward",
    "softplus_backward",
]


# --------------------------------------------------------------------------- stable maps
def sigmoid(x) -> np.ndarray:
    """Logistic function, stable for any finite input.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    s : ndarray of the shape and dtype of ``x``, values in [0, 1]

    Notes
    -----
    :math:`\\sigma(x) = e^{\\min(x,0)} / (1 + e^{-|x|})` ``[eq:sigmoid-stable]``:
    no exponent is ever positive, so nothing overflows, and small
    probabilities keep full relative precision.
    """
    x = float_array(x, "x")
    den = np.abs(x)
    np.negative(den, out=den)
    np.exp(den, out=den)
    den += 1
    num = np.minimum(x, 0)
    np.exp(num, out=num)
    num /= den  # [eq:sigmoid-stable]
    return num


def softplus(x) -> np.ndarray:
    """:math:`\\log(1 + e^x)`, stable for any finite input.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``

    Notes
    -----
    :math:`\\operatorname{softplus}(x) = \\max(x, 0) + \\log(1 + e^{-|x|})`
    ``[eq:softplus-stable]``.
    """
    x = float_array(x, "x")
    out = np.abs(x)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(x, 0)  # [eq:softplus-stable]
    return out


def logsumexp(x, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """:math:`\\log \\sum_k e^{x_k}` along ``axis`` with the max-shift ``[eq:logsumexp]``.

    Parameters
    ----------
    x : ndarray of shape (..., K, ...), float32 or float64
    axis : int
    keepdims : bool

    Returns
    -------
    ndarray with ``axis`` removed (or kept with size 1); same dtype as ``x``.
    An all ``-inf`` slice gives ``-inf``, never NaN.
    """
    x = float_array(x, "x")
    if x.ndim == 0 or x.shape[axis] == 0:
        raise ValueError(f"x must have a non-empty axis {axis}, got shape {x.shape}")
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype, copy=False)
    s = np.exp(x - m).sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        out = np.log(s) + m  # [eq:logsumexp]
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(x, axis: int = -1) -> np.ndarray:
    """:math:`x_k - \\log\\sum_j e^{x_j}` along ``axis`` ``[eq:log-softmax]``; shape and dtype of ``x``."""
    x = float_array(x, "x")
    return x - logsumexp(x, axis=axis, keepdims=True)  # [eq:log-softmax]


# --------------------------------------------------------------------------- linear
def linear_forward(x, W, b):
    """Affine map :math:`y = x W + b` ``[eq:linear-forward]``.

    Parameters
    ----------
    x : ndarray of shape (..., I)
        Leading axes (batch, samples, ...) are carried through.
    W : ndarray of shape (I, O)
        Weight in "in, out" layout (the transpose of torch's ``weight``).
    b : ndarray of shape (O,)

    Returns
    -------
    y : ndarray of shape (..., O)
    cache : tuple
        Opaque; pass to :func:`linear_backward`.
    """
    x, W, b = float_array(x, "x"), float_array(W, "W"), float_array(b, "b")
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D of shape (in, out), got shape {W.shape}")
    if b.shape != (W.shape[1],):
        raise ValueError(f"b must have shape ({W.shape[1]},) to match W {W.shape}, got {b.shape}")
    if x.ndim < 1 or x.shape[-1] != W.shape[0]:
        raise ValueError(f"x must have shape (..., {W.shape[0]}) to match W {W.shape}, got {x.shape}")
    same_dtype(W.dtype, x=x, b=b)
    x2 = x.reshape(-1, W.shape[0])
    y = x2 @ W  # [eq:linear-forward]
    y += b
    return y.reshape(x.shape[:-1] + (W.shape[1],)), ("linear", x, W)


def linear_backward(dy, cache, *, need_dx: bool = True):
    """Backward of :func:`linear_forward` ``[eq:linear-backward]``.

    Parameters
    ----------
    dy : ndarray of shape (..., O)
        Gradient of the loss with respect to ``y``.
    cache : tuple
        From :func:`linear_forward`.
    need_dx : bool
        If False, skip the product :math:`dy\\,W^\\top` and return ``dx=None``
        (the first layer of a network never needs it: one GEMM saved).

    Returns
    -------
    dx : ndarray of shape (..., I) or None
        :math:`dy\\, W^\\top`.
    dW : ndarray of shape (I, O)
        :math:`x^\\top dy`, summed over all leading axes.
    db : ndarray of shape (O,)
        :math:`\\sum_n dy_n`.
    """
    x, W = check_cache(cache, "linear", 2)
    dy = upstream(dy, x.shape[:-1] + (W.shape[1],), W.dtype)
    x2 = x.reshape(-1, W.shape[0])
    dy2 = dy.reshape(-1, W.shape[1])
    dW = x2.T @ dy2  # [eq:linear-backward]
    db = dy2.sum(axis=0)
    dx = (dy2 @ W.T).reshape(x.shape) if need_dx else None
    return dx, dW, db


# --------------------------------------------------------------------------- activations
def relu_forward(x):
    """:math:`y = \\max(x, 0)` ``[eq:relu]``; returns ``(y, cache)``, y of the shape and dtype of x."""
    x = float_array(x, "x")
    y = np.maximum(x, 0)  # [eq:relu]
    return y, ("relu", y)


def relu_backward(dy, cache):
    """:math:`dx = dy \\cdot 1[x > 0]` ``[eq:relu]`` (0 at the kink, as torch)."""
    (y,) = check_cache(cache, "relu", 1)
    dy = upstream(dy, y.shape, y.dtype)
    return dy * (y > 0)  # y > 0 exactly where x > 0


def _check_slope(slope) -> float:
    if isinstance(slope, bool) or not isinstance(slope, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"slope must be a real number, got {type(slope).__name__}")
    slope = float(slope)
    if not np.isfinite(slope):
        raise ValueError(f"slope must be finite, got {slope}")
    return slope


def leaky_relu_forward(x, slope: float = 0.01):
    """:math:`y = x` for :math:`x > 0`, :math:`a x` otherwise ``[eq:leaky-relu]``.

    Parameters
    ----------
    x : ndarray of any shape
    slope : float
        The negative-side slope :math:`a` (torch's ``negative_slope``).

    Returns
    -------
    y : ndarray of the shape and dtype of ``x``
    cache : tuple
    """
    x = float_array(x, "x")
    slope = _check_slope(slope)
    d = (x <= 0).astype(x.dtype)
    d *= slope
    d += x > 0  # local derivative, exactly 1 where x > 0 and a elsewhere  [eq:leaky-relu]
    y = x * d
    return y, ("leaky_relu", d)


def leaky_relu_backward(dy, cache):
    """:math:`dx = dy \\cdot (1 \\text{ if } x>0 \\text{ else } a)` ``[eq:leaky-relu]``."""
    (d,) = check_cache(cache, "leaky_relu", 1)
    dy = upstream(dy, d.shape, d.dtype)
    return dy * d


def tanh_forward(x):
    """:math:`y = \\tanh x`; returns ``(y, cache)`` ``[eq:tanh-backward]``."""
    x = float_array(x, "x")
    y = np.tanh(x)
    return y, ("tanh", y)


def tanh_backward(dy, cache):
    """:math:`dx = dy\\,(1 - y^2)` ``[eq:tanh-backward]``."""
    (y,) = check_cache(cache, "tanh", 1)
    dy = upstream(dy, y.shape, y.dtype)
    dx = y * y
    np.subtract(1, dx, out=dx)
    dx *= dy  # [eq:tanh-backward]
    return dx


def sigmoid_forward(x):
    """:math:`y = \\sigma(x)` computed stably ``[eq:sigmoid-stable]``; returns ``(y, cache)``."""
    y = sigmoid(x)
    return y, ("sigmoid", y)


def sigmoid_backward(dy, cache):
    """:math:`dx = dy\\,y(1-y)` ``[eq:sigmoid-backward]``."""
    (y,) = check_cache(cache, "sigmoid", 1)
    dy = upstream(dy, y.shape, y.dtype)
    dx = 1 - y
    dx *= y
    dx *= dy  # [eq:sigmoid-backward]
    return dx


def softplus_forward(x):
    """:math:`y = \\log(1+e^x)` computed stably ``[eq:softplus-stable]``; returns ``(y, cache)``."""
    x = float_array(x, "x")
    return softplus(x), ("softplus", x)


def softplus_backward(dy, cache):
    """:math:`dx = dy\\,\\sigma(x)` ``[eq:softplus-backward]``."""
    (x,) = check_cache(cache, "softplus", 1)
    dy = upstream(dy, x.shape, x.dtype)
    dx = sigmoid(x)
    dx *= dy  # [eq:softplus-backward]
    return dx
