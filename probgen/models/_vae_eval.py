"""Evaluating a VAE: per-example ELBO estimates and the importance-sampled log-likelihood.

Pure functions of the parameters (see :mod:`probgen.models._vae_backward`), batched so that
at most ``batch_size`` (example, sample) pairs are decoded at once, whatever N and k.
Inputs are assumed valid.
"""
from __future__ import annotations

import numpy as np

from ._vae_backward import VAESpec, Workspace, decode, encode, recon_nll

__all__ = ["log_weights", "elbo_estimates", "importance_log_likelihood", "streamed_log_mean_exp"]


def log_weights(p, spec: VAESpec, X, eps, ws: Workspace):
    """Importance log-weights :math:`\\log p(x, z_k) - \\log q(z_k|x)` for ``z_k = mu + sigma eps_k``.

    Parameters
    ----------
    X : ndarray of shape (N, D)
    eps : ndarray of shape (K, N, M)

    Returns
    -------
    log_w : ndarray of shape (K, N), float64
        ``-NLL - 1/2 |z|^2 + 1/2 |eps|^2 + 1/2 sum_j log_var_j`` ``[eq:iwae]``.
    kl : ndarray of shape (N,), float64
        The analytic KL of each row ``[eq:vae-kl]`` (for the L^B estimate).
    rec : ndarray of shape (K, N), float64
        The reconstruction NLL of each sample.
    """
    K, N, M = eps.shape
    mu, log_var, _ = encode(p, spec, X, ws)
    std = np.exp(0.5 * log_var)  # [eq:vae-reparam]
    z = mu + std * eps
    out, _ = decode(p, spec, z.reshape(K * N, M), ws)
    nll, _, _ = recon_nll(p, spec, out, X, ws)
    rec = nll.reshape(K, N).astype(np.float64)
    z64, e64 = z.astype(np.float64), eps.astype(np.float64)
    log_w = -rec - 0.5 * np.einsum("knm,knm->kn", z64, z64) + 0.5 * np.einsum("knm,knm->kn", e64, e64)
    log_w += 0.5 * log_var.astype(np.float64).sum(axis=1)  # [eq:iwae]
    mu64, lv64 = mu.astype(np.float64), log_var.astype(np.float64)
    kl = 0.5 * np.sum(mu64 * mu64 + np.exp(lv64) - 1.0 - lv64, axis=1)  # [eq:vae-kl]
    return log_w, kl, rec


def elbo_estimates(p, spec: VAESpec, X, rng, batch_size: int = 4096):
    """Per-example ELBO with the spec's estimator and ``n_samples`` (float64, shape (N,)).

    ``"analytic"``: :math:`-\\frac1L\\sum_l \\text{NLL}_l - \\mathrm{KL}` ``[eq:vae-lb]``;
    ``"mc"``: :math:`\\frac1L\\sum_l \\log w_l` ``[eq:vae-la]``.
    """
    L = spec.n_samples
    out = np.empty(X.shape[0], np.float64)
    ws = Workspace(X.dtype)
    step = max(1, batch_size // L)
    for s in range(0, X.shape[0], step):
        Xb = X[s:s + step]
        eps = rng.standard_normal((L, Xb.shape[0], spec.latent_dim), dtype=X.dtype)
        log_w, kl, rec = log_weights(p, spec, Xb, eps, ws)
        if spec.estimator == "analytic":
            out[s:s + step] = -rec.mean(axis=0) - kl  # [eq:vae-lb]
        else:
            out[s:s + step] = log_w.mean(axis=0)  # [eq:vae-la]
    return out


def streamed_log_mean_exp(X, k: int, batch_size: int, chunk_log_weights):
    """:math:`\\log \\frac1k \\sum_{i=1}^k w_i` per row of ``X`` (float64, shape (N,)), streamed ``[eq:iwae]``.

    Shared by every latent-variable model's importance-sampled estimate. Rows are taken
    ``max(1, batch_size // k)`` at a time and their ``k`` samples in chunks;
    ``chunk_log_weights(Xb, n) -> (n, len(Xb))`` returns the float64 log-weights of ``n``
    fresh samples for the rows ``Xb``.  The log-sum-exp over chunks is streamed (running
    max and rescaled sum), so memory is O(batch_size x width) for any ``k``.
    """
    rows = max(1, batch_size // k)
    chunk = max(1, batch_size // rows)
    out = np.empty(X.shape[0], np.float64)
    for s in range(0, X.shape[0], rows):
        Xb = X[s:s + rows]
        m = np.full(Xb.shape[0], -np.inf)
        acc = np.zeros(Xb.shape[0])
        for c in range(0, k, chunk):
            log_w = chunk_log_weights(Xb, min(chunk, k - c))
            m_new = np.maximum(m, log_w.max(axis=0))
            acc = acc * np.exp(m - m_new) + np.exp(log_w - m_new).sum(axis=0)  # streaming log-sum-exp
            m = m_new
        out[s:s + rows] = m + np.log(acc) - np.log(k)  # [eq:iwae]
    return out


def importance_log_likelihood(p, spec: VAESpec, X, k: int, rng, batch_size: int = 4096):
    """:math:`\\log \\frac1k \\sum_i w_i` per example (float64, shape (N,)) ``[eq:iwae]``.

    Rows are taken ``max(1, batch_size // k)`` at a time and their ``k`` samples in
    chunks; the log-sum-exp over chunks is streamed (running max and rescaled sum), so
    memory is O(batch_size x width) for any ``k`` (:func:`streamed_log_mean_exp`).
    """
    ws = Workspace(X.dtype)

    def chunk_log_weights(Xb, n):
        eps = rng.standard_normal((n, Xb.shape[0], spec.latent_dim), dtype=X.dtype)
        return log_weights(p, spec, Xb, eps, ws)[0]

    return streamed_log_mean_exp(X, k, batch_size, chunk_log_weights)
