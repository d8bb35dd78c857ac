"""The VAE's hot elementwise passes, each beside the plain twin that defines it.

Besides its GEMMs, a training step sweeps the (L N, D) decoder output once for the
Bernoulli NLL ``[eq:vae-bernoulli]`` and its gradient ``w (sigma(l) - x)``
``[eq:vae-backward-logits]``, and each hidden layer once for the activation's
derivative ``[eq:vae-backward-act]``; both also need the column sums that are the
bias gradients.  As chains of NumPy ufuncs these cost ~10 sweeps and several
temporaries each.  Here:

* transcendental functions run as NumPy's SIMD ``exp`` / ``log1p`` into small
  preallocated blocks of rows (they stay in cache);
* the arithmetic in between is one serial Numba loop that also accumulates the
  bias gradient (no ``prange``: these run between BLAS calls, see PERFORMANCE.md).

``*_reference`` twins are built from :mod:`probgen.nn` and the tests compare them.
Inputs are assumed valid and C-contiguous (private hot path).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..nn.functional import relu_backward, relu_forward, tanh_backward, tanh_forward
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward

__all__ = ["bernoulli_nll_grad", "bernoulli_nll_grad_reference", "act_backward", "act_backward_reference"]

BLOCK_ROWS = 64  # rows per block: ~200 KiB per float32 scratch array at D = 784


@njit(cache=True, error_model="numpy", fastmath=False)
def _sigmoid_grad_kernel(logits, e, X, r0, w, one, zero, grad, u, db):  # pragma: no cover - compiled
    """Rows r0.. of the output: grad = w (sigma(l) - x), u = max(l, 0) - x l, db += grad."""
    R, D = e.shape
    N = X.shape[0]
    for i in range(R):
        r = r0 + i
        n = r % N  # decoded row r belongs to example r mod N
        for d in range(D):
            l = logits[r, d]
            x = X[n, d]
            e_rd = e[i, d]  # exp(-|l|), in (0, 1]
            num = one if l >= zero else e_rd
            g = (num / (one + e_rd) - x) * w  # sigma(l) stably  [eq:sigmoid-stable] [eq:vae-backward-logits]
            grad[r, d] = g
            db[d] += g
            u[i, d] = max(l, zero) - x * l


@njit(cache=True, error_model="numpy", fastmath=False)
def _neg_abs_kernel(logits, r0, t):  # pragma: no cover - compiled
    """t = -|l| for rows r0.. (one pass instead of abs + negative)."""
    R, D = t.shape
    for i in range(R):
        for d in range(D):
            t[i, d] = -abs(logits[r0 + i, d])


@njit(cache=True, error_model="numpy", fastmath=False)
def _linear_part_kernel(logits, X, r0, zero, u):  # pragma: no cover - compiled
    """u = max(l, 0) - x l (the NLL without its log1p part), no gradient."""
    R, D = u.shape
    N = X.shape[0]
    for i in range(R):
        r = r0 + i
        n = r % N
        for d in range(D):
            l = logits[r, d]
            u[i, d] = max(l, zero) - X[n, d] * l


def bernoulli_nll_grad(logits, X, w, *, grad=None, db=None, t=None, u=None, nll=None):
    """Per-row Bernoulli NLL from logits and (optionally) its scaled gradient and column sums.

    Parameters
    ----------
    logits : ndarray of shape (R, D), R = L N, C-contiguous
        Row ``r`` is decoded from sample ``r // N`` of example ``r % N``.
    X : ndarray of shape (N, D), same dtype, values in [0, 1]
    w : float
        Scale of the gradient (``1 / (N L)`` for a mean over examples and samples).
    grad : ndarray of shape (R, D) or None
        If given, receives :math:`w(\\sigma(\\ell) - x)`.
    db : ndarray of shape (D,) or None
        With ``grad``: receives the column sums of ``grad`` (the output bias gradient).
    t, u : ndarray of shape (BLOCK_ROWS, D) or None
        Scratch (allocated when None).
    nll : ndarray of shape (R,) or None
        Output buffer.

    Returns
    -------
    nll : ndarray of shape (R,)
        :math:`\\sum_d \\log(1 + e^{-|\\ell_d|}) + \\max(\\ell_d, 0) - x_d \\ell_d`
        ``[eq:vae-bernoulli]``.
    """
    R, D = logits.shape
    dt = logits.dtype
    B = min(R, BLOCK_ROWS)
    t = np.empty((B, D), dt) if t is None else t
    u = np.empty((B, D), dt) if u is None else u
    nll = np.empty(R, dt) if nll is None else nll
    if grad is not None:
        db = np.empty(D, dt) if db is None else db
        db.fill(0)
    one, zero, w_ = dt.type(1), dt.type(0), dt.type(0 if w is None else w)
    for r0 in range(0, R, B):
        n = min(B, R - r0)
        tb, ub = t[:n], u[:n]
        _neg_abs_kernel(logits, r0, tb)
        np.exp(tb, out=tb)  # e = exp(-|l|) in (0, 1]: never overflows
        if grad is None:
            _linear_part_kernel(logits, X, r0, zero, ub)
        else:
            _sigmoid_grad_kernel(logits, tb, X, r0, w_, one, zero, grad, ub, db)
        np.log1p(tb, out=tb)
        tb += ub  # softplus(l) - x l  [eq:vae-bernoulli]
        np.sum(tb, axis=1, out=nll[r0:r0 + n])
    return nll


def bernoulli_nll_grad_reference(logits, X, w):
    """Plain twin of :func:`bernoulli_nll_grad` from :mod:`probgen.nn.losses`.

    Returns
    -------
    nll : ndarray of shape (R,)
    grad : ndarray of shape (R, D)
        :math:`w(\\sigma(\\ell) - x)` ``[eq:vae-backward-logits]``.
    db : ndarray of shape (D,)
        Column sums of ``grad``.
    """
    R, D = logits.shape
    L3 = logits.reshape(R // X.shape[0], X.shape[0], D)
    value, cache = bernoulli_nll_forward(L3, np.broadcast_to(X, L3.shape))  # [eq:vae-bernoulli]
    grad = bernoulli_nll_backward(np.full(value.shape, w, dtype=logits.dtype), cache).reshape(R, D)
    return value.reshape(R), grad, grad.sum(axis=0)


# --------------------------------------------------------------------------- activation backward
@njit(cache=True, error_model="numpy", fastmath=False)
def _tanh_backward_kernel(d_h, h, one, db):  # pragma: no cover - compiled
    R, H = d_h.shape
    for j in range(H):
        db[j] = 0
    for r in range(R):
        for j in range(H):
            v = d_h[r, j] * (one - h[r, j] * h[r, j])  # tanh' = 1 - h^2
            d_h[r, j] = v
            db[j] += v


@njit(cache=True, error_model="numpy", fastmath=False)
def _relu_backward_kernel(d_h, h, zero, db):  # pragma: no cover - compiled
    R, H = d_h.shape
    for j in range(H):
        db[j] = 0
    for r in range(R):
        for j in range(H):
            v = d_h[r, j] if h[r, j] > zero else zero  # relu' = 1[h > 0] (0 at the kink)
            d_h[r, j] = v
            db[j] += v


def act_backward(d_h, h, kind, db):
    """``d_h <- d_h * act'(a)`` in place from the output ``h = act(a)``; ``db`` <- its column sums.

    Parameters
    ----------
    d_h : ndarray of shape (R, H), C-contiguous, overwritten with :math:`d_a`
    h : ndarray of shape (R, H)
    kind : {"tanh", "relu"}
    db : ndarray of shape (H,)
        Receives :math:`\\sum_r d_a` (the gradient of the layer's bias) ``[eq:vae-backward-act]``.
    """
    dt = d_h.dtype
    if kind == "tanh":
        _tanh_backward_kernel(d_h, h, dt.type(1), db)
    else:
        _relu_backward_kernel(d_h, h, dt.type(0), db)
    return d_h


def act_backward_reference(d_h, a, kind):
    """Twin of :func:`act_backward` from :mod:`probgen.nn.functional`, given the pre-activation ``a``.

    Returns
    -------
    d_a : ndarray of shape (R, H)
    db : ndarray of shape (H,)
    """
    _, cache = tanh_forward(a) if kind == "tanh" else relu_forward(a)
    d_a = tanh_backward(d_h, cache) if kind == "tanh" else relu_backward(d_h, cache)
    return d_a, d_a.sum(axis=0)
