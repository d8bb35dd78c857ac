"""The VQ-VAE's codebook maintenance: the EMA update, dead-code restarts and code perplexity.

Functions of arrays, used by :class:`probgen.models.VQVAE` during ``fit`` (derivations in
``docs/vqvae.md``: ``[eq:vq-ema]``, ``[eq:vq-restart]``, ``[eq:vq-perplexity]``).
"""
from __future__ import annotations

import numpy as np

from ..kernels.codebook import code_sums

__all__ = ["ema_codebook_update", "code_perplexity", "restart_dead_codes"]


def ema_codebook_update(cluster_size, code_sum, z_e, indices, *, decay, eps):
    """One exponential-moving-average codebook update ``[eq:vq-ema]``.

    Parameters
    ----------
    cluster_size : ndarray of shape (K,)
        Running counts :math:`N_k`.
    code_sum : ndarray of shape (K, C)
        Running sums :math:`m_k` of the encoder outputs assigned to code k.
    z_e : ndarray of shape (B, C)
        Encoder outputs of this batch (all latent positions, flattened).
    indices : ndarray of shape (B,)
        Their codes.
    decay, eps : float
        :math:`\\gamma` and the Laplace-smoothing constant :math:`\\epsilon`.

    Returns
    -------
    cluster_size, code_sum, codebook : new arrays
        :math:`N_k \\leftarrow \\gamma N_k + (1-\\gamma) n_k`,
        :math:`m_k \\leftarrow \\gamma m_k + (1-\\gamma) \\sum_{i: k_i = k} z_{e,i}`,
        :math:`e_k = m_k / \\tilde N_k` with
        :math:`\\tilde N_k = (N_k + \\epsilon) / (n + K\\epsilon) \\cdot n`, :math:`n = \\sum_k N_k`.
    """
    K = cluster_size.shape[0]
    counts = np.bincount(indices, minlength=K).astype(cluster_size.dtype)
    sums = code_sums(indices, z_e, K).astype(code_sum.dtype, copy=False)
    cluster_size = decay * cluster_size + (1.0 - decay) * counts  # [eq:vq-ema]
    code_sum = decay * code_sum + (1.0 - decay) * sums
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + K * eps) * n  # Laplace smoothing
    return cluster_size, code_sum, code_sum / smoothed[:, None]


def code_perplexity(indices, n_codes):
    """:math:`\\exp(-\\sum_k p_k \\log p_k)` of the code frequencies ``[eq:vq-perplexity]``."""
    return _perplexity_of_counts(np.bincount(np.ravel(indices), minlength=n_codes))


def _perplexity_of_counts(counts):
    p = counts[counts > 0] / np.sum(counts)
    return float(np.exp(-np.sum(p * np.log(p))))  # [eq:vq-perplexity]


def restart_dead_codes(codebook, usage, z_e, *, threshold, rng, cluster_size=None, code_sum=None, eps=None):
    """Move every code used fewer than ``threshold`` times to a random recent encoder output ``[eq:vq-restart]``.

    Parameters
    ----------
    codebook : ndarray of shape (K, C)
    usage : ndarray of shape (K,)
        How many encoder outputs each code was assigned since the last check.
    z_e : ndarray of shape (B, C)
        Recent encoder outputs (the current minibatch, all latent positions); the new code vectors
        are drawn from its rows without replacement (with replacement only when more than B codes
        are dead).
    threshold : float
        Codes with ``usage < threshold`` are dead.
    rng : numpy.random.Generator
    cluster_size, code_sum, eps : EMA statistics :math:`N_k, m_k` and :math:`\\epsilon` or None
        With them (``codebook_update="ema"``) every dead code gets the average count
        :math:`\\bar N = n / K` and :math:`m_k = \\tilde N_k z`, and the whole codebook is recomputed as
        :math:`m_k / \\tilde N_k` ``[eq:vq-ema]``, so the EMA state stays consistent with it.

    Returns
    -------
    dead : ndarray of int64, the restarted codes (ascending)
    codebook, cluster_size, code_sum : new arrays (the last two None without EMA statistics)
    """
    dead = np.flatnonzero(usage < threshold)
    codebook = codebook.copy()
    if dead.size == 0:
        return dead, codebook, cluster_size, code_sum
    rows = rng.choice(z_e.shape[0], size=dead.size, replace=dead.size > z_e.shape[0])
    new = z_e[rows].astype(codebook.dtype)
    if cluster_size is None:
        codebook[dead] = new
        return dead, codebook, None, None
    K = codebook.shape[0]
    cluster_size, code_sum = cluster_size.copy(), code_sum.copy()
    cluster_size[dead] = cluster_size.sum() / K  # [eq:vq-restart]
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + K * eps) * n  # N~_k of [eq:vq-ema]
    code_sum[dead] = smoothed[dead, None] * new
    return dead, code_sum / smoothed[:, None], cluster_size, code_sum
