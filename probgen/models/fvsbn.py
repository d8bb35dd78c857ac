"""Fully visible sigmoid belief network: logistic autoregression with a full strictly-lower-triangular weight matrix.

:math:`p(x_d = 1\\mid x_{<d}) = \\sigma(b_d + \\sum_{j<d} W_{dj} x_j)` ``[eq:fvsbn]``:
one logistic regression per pixel on all the pixels before it, :math:`D(D+1)/2`
free parameters ``[eq:param-counts]``.  All :math:`D` logits of a batch are one
GEMM with the masked weight, and so is the weight gradient, masked again: the
entries on and above the diagonal get exactly zero gradient, so Adam (zero
moments, zero update) and SGD leave them at their initial zero for good.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_nonnegative_float
from ..nn.functional import sigmoid
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward
from ._autoregressive import BinaryAutoregressive

__all__ = ["FVSBN", "fvsbn_logits", "fvsbn_loss_and_grads"]


def fvsbn_logits(X, W, b, mask) -> np.ndarray:
    """Conditional logits ``[eq:fvsbn]``.

    Parameters
    ----------
    X : ndarray of shape (N, D)
    W : ndarray of shape (D, D)
        Only the strictly lower triangle is used (``W * mask``).
    b : ndarray of shape (D,)
    mask : ndarray of shape (D, D)
        ``np.tril(ones, -1)`` in the dtype of ``W``.

    Returns
    -------
    L : ndarray of shape (N, D)
        :math:`\\ell_{nd} = b_d + \\sum_{j<d} W_{dj} x_{nj}`, i.e. :math:`L = X (W \\odot M)^\\top + b`.
    """
    L = X @ (W * mask).T  # [eq:fvsbn]
    L += b
    return L


def fvsbn_loss_and_grads(X, W, b, mask):
    """Mean NLL ``[eq:ar-nll]`` of valid binary ``X`` (N, D) and its gradients.

    Returns
    -------
    loss : float
    grads : dict
        ``W``: :math:`(\\frac1N (\\sigma(L) - X)^\\top X) \\odot M`, shape (D, D);
        ``b``: :math:`\\frac1N \\sum_n (\\sigma(L_n) - x_n)`, shape (D,) ``[eq:fvsbn-grad]``.
    """
    N = X.shape[0]
    value, cache = bernoulli_nll_forward(fvsbn_logits(X, W, b, mask), X)
    dL = bernoulli_nll_backward(np.full(N, 1.0 / N, dtype=W.dtype), cache)  # (sigma(L) - X) / N
    dW = dL.T @ X
    dW *= mask  # [eq:fvsbn-grad]
    return float(np.mean(value, dtype=np.float64)), {"W": dW, "b": dL.sum(axis=0)}


class FVSBN(BinaryAutoregressive):
    """Fully visible sigmoid belief network (logistic autoregressive model) ``[eq:fvsbn]``.

    Parameters
    ----------
    init_scale : float >= 0
        Standard deviation of the initial strictly-lower-triangular weights
        (0: start from independent pixels; the loss is convex, so the start
        matters little).
    rng : None, int or numpy.random.Generator
        Initial weights, shuffling and sampling.
    dtype : float32 or float64

    Attributes
    ----------
    n_features_in_ : int
    history_ : dict
    n_parameters_ : int
        :math:`D(D+1)/2` ``[eq:param-counts]``: the strictly lower triangle of
        ``W`` and ``b``; ``W`` is stored as a full (D, D) array whose upper
        triangle and diagonal stay zero.

    Notes
    -----
    The negative log-likelihood is a sum of :math:`D` independent logistic
    regressions, each convex in its row of ``W`` and its bias.
    """

    def __init__(self, init_scale=0.0, rng=None, dtype=np.float64):
        super().__init__(rng=rng, dtype=dtype)
        self.init_scale = check_nonnegative_float(init_scale, "init_scale")
        self._mask = None

    def _config_extra(self):
        return {"init_scale": self.init_scale}

    def build(self, n_features):
        super().build(n_features)
        D = self.n_features_in_
        self._mask = np.tril(np.ones((D, D), dtype=self.dtype), -1)
        return self

    def _init_params(self, D, rng):
        W = np.tril(self.init_scale * rng.standard_normal((D, D)), -1) if self.init_scale else np.zeros((D, D))
        return {"W": W, "b": np.zeros(D)}

    def _free_parameters(self):
        D = self.n_features_in_
        return D * (D - 1) // 2 + D

    def _logits(self, X):
        return fvsbn_logits(X, self._params["W"], self._params["b"], self._mask)

    def _loss_and_grads(self, X):
        return fvsbn_loss_and_grads(X, self._params["W"], self._params["b"], self._mask)

    def _sample(self, U):
        Wm = self._params["W"] * self._mask
        b = self._params["b"]
        out = np.zeros_like(U)
        for d in range(U.shape[1]):
            logit = out[:, :d] @ Wm[d, :d] + b[d]  # [eq:fvsbn]
            out[:, d] = U[:, d] < sigmoid(logit)
        return out
