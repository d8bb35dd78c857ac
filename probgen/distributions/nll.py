"""Negative log-likelihood in nats and in bits per dimension.

Maximum likelihood minimises the empirical cross-entropy
:math:`-\\frac1N\\sum_n \\log p_\\theta(x_n)` (``docs/mle.md``); these helpers
turn per-example log-probabilities (natural logs) into the two units that
papers report.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_array, check_positive_int

__all__ = ["nll_nats", "bits_per_dim"]


def nll_nats(log_probs) -> float:
    """Mean negative log-likelihood in nats.

    Parameters
    ----------
    log_probs : array_like of shape (N,) (any shape is averaged over)
        Per-example :math:`\\log p_\\theta(x_n)` in nats, e.g. ``score_samples(X)``.

    Returns
    -------
    float
        :math:`-\\frac1N\\sum_n \\log p_\\theta(x_n)`, the empirical cross-entropy
        ``[eq:nll-nats]``.  It estimates the cross-entropy
        :math:`H(p_{data}, p_\\theta) = H(p_{data}) + KL(p_{data} \\| p_\\theta)`
        ``[eq:cross-entropy]``, so minimising it minimises the KL ``[eq:mle-kl]``.
    """
    lp = check_array(log_probs, "log_probs", ndim=None, dtype=np.float64)
    if lp.size == 0:
        raise ValueError("log_probs must not be empty")
    return float(-np.mean(lp))  # [eq:nll-nats]


def bits_per_dim(log_probs, D: int) -> float:
    """Mean negative log-likelihood in bits per dimension.

    Parameters
    ----------
    log_probs : array_like of shape (N,)
        Per-example :math:`\\log p_\\theta(x_n)` in nats of D-dimensional data.
    D : int
        Number of dimensions of one example (784 for MNIST).

    Returns
    -------
    float
        :math:`\\mathrm{NLL}_{\\text{nats}} / (D \\ln 2)`  ``[eq:bits-per-dim]``.
        For continuous densities on dequantised 8-bit data the caller must
        first add the change of scale (see ``docs/mle.md``).
    """
    D = check_positive_int(D, "D")
    return nll_nats(log_probs) / (D * np.log(2.0))  # [eq:bits-per-dim]
