"""Kullback-Leibler divergences KL(p || q): Gaussian (full, diagonal, against N(0, I)),
Bernoulli and categorical from logits, and a Monte-Carlo estimator.

Derivations: ``docs/kl.md``.  Argument order is always (p, q) for KL(p || q)
:math:`= E_p[\\log p - \\log q]` (the source notes swap it; see ``docs/errata.md``).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .._validation import check_array, check_positive_int, check_rng
from ._linalg import _cholesky_batched, _float_dtype
from .discrete import log_softmax, softplus

__all__ = [
    "kl_gaussian",
    "kl_gaussian_diag",
    "kl_normal_std",
    "kl_bernoulli",
    "kl_categorical",
    "kl_monte_carlo",
]


def _as_float(a, name, min_ndim):
    a = check_array(a, name, ndim=None, dtype=None, min_rows=0)
    if a.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {a.shape}")
    return a


def _broadcast(shapes_named):
    try:
        return np.broadcast_shapes(*(s for _, s in shapes_named))
    except ValueError:
        desc = ", ".join(f"{n} {s}" for n, s in shapes_named)
        raise ValueError(f"batch shapes do not broadcast: {desc}") from None


def _scalar_or_array(out):
    return out[()] if out.ndim == 0 else out


def kl_gaussian(mean_p, cov_p, mean_q, cov_q):
    """KL(N(mean_p, cov_p) || N(mean_q, cov_q)) for full covariances, batched.

    Parameters
    ----------
    mean_p, mean_q : array_like of shape (..., D)
    cov_p, cov_q : array_like of shape (..., D, D)
        Symmetric positive definite.  Leading (batch) axes of all four
        arguments broadcast against each other.

    Returns
    -------
    kl : ndarray of the broadcast batch shape (a scalar when there is none)
        In nats, >= 0.

    Notes
    -----
    From the trace trick ``[eq:kl-trace-trick]``, ``[eq:kl-gauss]``:
    :math:`\\tfrac12\\big(\\operatorname{tr}(\\Sigma_q^{-1}\\Sigma_p) + (\\mu_q-\\mu_p)^\\top\\Sigma_q^{-1}(\\mu_q-\\mu_p)
    - D + \\log\\frac{|\\Sigma_q|}{|\\Sigma_p|}\\big)`.
    With :math:`\\Sigma_p = L_pL_p^\\top`, :math:`\\Sigma_q = L_qL_q^\\top`,
    :math:`M = L_q^{-1}L_p` and :math:`t_i = 2\\log(L_{p,ii}/L_{q,ii})` it is
    evaluated as ``[eq:kl-gauss-chol]``
    :math:`\\tfrac12\\big(\\sum_i (e^{t_i}-1-t_i) + \\sum_{i>j} M_{ij}^2 + \\lVert L_q^{-1}(\\mu_q-\\mu_p)\\rVert^2\\big)`,
    a sum of non-negative terms, so KL(p||p) is 0 to rounding and KL is never
    negative.  Every inverse is a triangular solve.
    """
    mean_p = _as_float(mean_p, "mean_p", 1)
    mean_q = _as_float(mean_q, "mean_q", 1)
    cov_p = _as_float(cov_p, "cov_p", 2)
    cov_q = _as_float(cov_q, "cov_q", 2)
    D = mean_p.shape[-1]
    for name, arr, shape in (
        ("mean_q", mean_q, mean_q.shape[-1:]),
        ("cov_p", cov_p, cov_p.shape[-2:]),
        ("cov_q", cov_q, cov_q.shape[-2:]),
    ):
        want = (D,) if name == "mean_q" else (D, D)
        if shape != want:
            raise ValueError(
                f"{name} must end in shape {want} to match mean_p of shape {mean_p.shape}, got {arr.shape}"
            )
    if D == 0:
        raise ValueError("mean_p must have at least one dimension D >= 1, got D = 0")
    batch = _broadcast([
        ("mean_p", mean_p.shape[:-1]), ("cov_p", cov_p.shape[:-2]),
        ("mean_q", mean_q.shape[:-1]), ("cov_q", cov_q.shape[:-2]),
    ])
    dtype = _float_dtype(mean_p, cov_p, mean_q, cov_q)
    mean_p, cov_p, mean_q, cov_q = (a.astype(dtype, copy=False) for a in (mean_p, cov_p, mean_q, cov_q))
    # factorise each distinct covariance once, before broadcasting
    Lp = _cholesky_batched(cov_p.reshape(-1, D, D), "cov_p").reshape(cov_p.shape)
    Lq_own = _cholesky_batched(cov_q.reshape(-1, D, D), "cov_q")
    B = int(np.prod(batch, dtype=np.int64))
    Lp = np.broadcast_to(Lp, batch + (D, D)).reshape(B, D, D)
    dmu = np.broadcast_to(mean_q - mean_p, batch + (D,)).reshape(B, D)
    if Lq_own.shape[0] == 1:
        # one q for the whole batch: a single solve with B*(D+1) right-hand sides
        rhs = np.concatenate([Lp.transpose(1, 0, 2).reshape(D, B * D), dmu.T], axis=1)
        sol = scipy.linalg.solve_triangular(Lq_own[0], rhs, lower=True, check_finite=False)
        M = sol[:, : B * D].reshape(D, B, D).transpose(1, 0, 2)
        z = sol[:, B * D:].T
        diag_q = np.broadcast_to(np.diagonal(Lq_own[0]), (B, D))
    else:
        Lq = np.broadcast_to(Lq_own.reshape(cov_q.shape), batch + (D, D)).reshape(B, D, D)
        M = np.empty((B, D, D), dtype=dtype)
        z = np.empty((B, D), dtype=dtype)
        for b in range(B):
            sol = scipy.linalg.solve_triangular(
                Lq[b], np.column_stack([Lp[b], dmu[b]]), lower=True, check_finite=False
            )
            M[b], z[b] = sol[:, :D], sol[:, D]
        diag_q = np.diagonal(Lq, axis1=1, axis2=2)
    t = 2.0 * (np.log(np.diagonal(Lp, axis1=1, axis2=2)) - np.log(diag_q))  # log M_ii^2
    diag_terms = np.maximum(np.expm1(t) - t, 0.0).sum(axis=1)  # e^t - 1 - t >= 0
    off_diag = np.einsum("bij,bij->b", np.tril(M, -1), np.tril(M, -1))
    maha = np.einsum("bd,bd->b", z, z)
    kl = 0.5 * (diag_terms + off_diag + maha)  # [eq:kl-gauss-chol] = [eq:kl-gauss]
    return _scalar_or_array(kl.reshape(batch).astype(dtype, copy=False))


def kl_gaussian_diag(mean_p, var_p, mean_q, var_q):
    """KL(N(mean_p, diag(var_p)) || N(mean_q, diag(var_q))), summed over the last axis.

    Parameters
    ----------
    mean_p, var_p, mean_q, var_q : array_like of shape (..., D), broadcastable
        Means and variances (> 0; variances, not log-variances).

    Returns
    -------
    kl : ndarray of shape (...)

    Notes
    -----
    ``[eq:kl-gauss-diag]``: with :math:`t_d = \\log(\\sigma^2_{p,d}/\\sigma^2_{q,d})`,
    :math:`\\tfrac12\\sum_d\\big(e^{t_d} - 1 - t_d + (\\mu_{q,d}-\\mu_{p,d})^2/\\sigma^2_{q,d}\\big)`.
    """
    args = {n: _as_float(a, n, 1) for n, a in
            (("mean_p", mean_p), ("var_p", var_p), ("mean_q", mean_q), ("var_q", var_q))}
    _broadcast([(n, a.shape) for n, a in args.items()])
    for n in ("var_p", "var_q"):
        if args[n].size and np.min(args[n]) <= 0:
            raise ValueError(f"{n} must be > 0 everywhere, got minimum {float(np.min(args[n])):.3g}")
    dtype = _float_dtype(*args.values())
    mp, vp, mq, vq = (a.astype(dtype, copy=False) for a in args.values())
    t = np.log(vp) - np.log(vq)
    terms = np.maximum(np.expm1(t) - t, 0.0) + (mq - mp) ** 2 / vq
    return _scalar_or_array(0.5 * terms.sum(axis=-1))  # [eq:kl-gauss-diag]


def kl_normal_std(mean, log_var):
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) per row: the VAE's regulariser.

    Parameters
    ----------
    mean : array_like of shape (N, D) (or any (..., D))
    log_var : array_like, same shape
        Log-variances :math:`\\log\\sigma^2` (std = exp(0.5 * log_var)).

    Returns
    -------
    kl : ndarray of shape (N,) (the leading shape)

    Notes
    -----
    ``[eq:kl-std-normal]``:
    :math:`\\tfrac12\\sum_d\\big(\\mu_d^2 + e^{s_d} - 1 - s_d\\big)`, :math:`s_d=\\log\\sigma_d^2`;
    ``expm1`` keeps :math:`e^{s}-1-s` accurate near :math:`s=0`.
    """
    mean = _as_float(mean, "mean", 1)
    log_var = _as_float(log_var, "log_var", 1)
    if mean.shape != log_var.shape:
        raise ValueError(f"mean and log_var must have the same shape, got {mean.shape} and {log_var.shape}")
    dtype = _float_dtype(mean, log_var)
    mean, log_var = mean.astype(dtype, copy=False), log_var.astype(dtype, copy=False)
    terms = mean**2 + np.maximum(np.expm1(log_var) - log_var, 0.0)
    return _scalar_or_array(0.5 * terms.sum(axis=-1))  # [eq:kl-std-normal]


def kl_bernoulli(logits_p, logits_q):
    """Elementwise KL(Bern(sigmoid(logits_p)) || Bern(sigmoid(logits_q))).

    Parameters
    ----------
    logits_p, logits_q : array_like, broadcastable
        Finite logits; no probability is formed before taking a log.

    Returns
    -------
    kl : ndarray of the broadcast shape
        Elementwise; sum over the last axis for a factorised multivariate Bernoulli.

    Notes
    -----
    With :math:`\\log\\sigma(\\ell) = -\\mathrm{softplus}(-\\ell)` and
    :math:`\\log(1-\\sigma(\\ell)) = -\\mathrm{softplus}(\\ell)`  ``[eq:kl-bernoulli]``:
    :math:`\\sigma(\\ell_p)\\big(\\mathrm{sp}(-\\ell_q)-\\mathrm{sp}(-\\ell_p)\\big)
    + \\sigma(-\\ell_p)\\big(\\mathrm{sp}(\\ell_q)-\\mathrm{sp}(\\ell_p)\\big)`.
    Rounding can leave values of order 1e-16 below zero; they are clamped to 0.
    """
    lp = check_array(logits_p, "logits_p", ndim=None, dtype=None, min_rows=0)
    lq = check_array(logits_q, "logits_q", ndim=None, dtype=None, min_rows=0)
    _broadcast([("logits_p", lp.shape), ("logits_q", lq.shape)])
    dtype = _float_dtype(lp, lq)
    lp, lq = lp.astype(dtype, copy=False), lq.astype(dtype, copy=False)
    sp_p, sp_mp = softplus(lp), softplus(-lp)
    p1, p0 = np.exp(-sp_mp), np.exp(-sp_p)  # sigma(l_p), 1 - sigma(l_p), each computed directly
    kl = p1 * (softplus(-lq) - sp_mp) + p0 * (softplus(lq) - sp_p)  # [eq:kl-bernoulli]
    return _scalar_or_array(np.maximum(kl, 0.0))


def kl_categorical(logits_p, logits_q):
    """KL(Cat(softmax(logits_p)) || Cat(softmax(logits_q))) over the last axis.

    Parameters
    ----------
    logits_p, logits_q : array_like of shape (..., K), broadcastable

    Returns
    -------
    kl : ndarray of shape (...)

    Notes
    -----
    ``[eq:kl-categorical]``:
    :math:`\\sum_k \\pi_{p,k}\\big(\\log\\pi_{p,k} - \\log\\pi_{q,k}\\big)` with both log-probabilities
    from a max-shifted log-softmax ``[eq:log-softmax]``; clamped at 0 against rounding.
    """
    lp = _as_float(logits_p, "logits_p", 1)
    lq = _as_float(logits_q, "logits_q", 1)
    if lp.shape[-1] != lq.shape[-1] or lp.shape[-1] == 0:
        raise ValueError(
            f"logits_p and logits_q must have the same number K >= 1 of classes (last axis), "
            f"got shapes {lp.shape} and {lq.shape}"
        )
    _broadcast([("logits_p", lp.shape), ("logits_q", lq.shape)])
    dtype = _float_dtype(lp, lq)
    log_p = log_softmax(lp.astype(dtype, copy=False))
    log_q = log_softmax(lq.astype(dtype, copy=False))
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)  # [eq:kl-categorical]
    return _scalar_or_array(np.maximum(kl, 0.0))


def kl_monte_carlo(log_p, log_q, sample_p, n, rng=None):
    """Monte-Carlo estimate of KL(p || q) and its standard error.

    Parameters
    ----------
    log_p, log_q : callable
        ``log_p(x) -> ndarray of shape (n,)``: log-densities (same base
        measure) of a batch of samples.
    sample_p : callable
        ``sample_p(n, rng) -> x``: n samples from p (first axis of length n),
        drawn with the ``numpy.random.Generator`` it is given.
    n : int
        Number of samples, >= 2.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    estimate : float
        :math:`\\hat K = \\frac1n\\sum_i \\big(\\log p(x_i) - \\log q(x_i)\\big)`,
        :math:`x_i\\sim p`  ``[eq:kl-mc]``; unbiased.
    standard_error : float
        :math:`s/\\sqrt n` with :math:`s` the sample standard deviation
        (ddof=1) of the log-ratios  ``[eq:kl-mc-se]``.
    """
    for name, f in (("log_p", log_p), ("log_q", log_q), ("sample_p", sample_p)):
        if not callable(f):
            raise TypeError(f"{name} must be callable, got {type(f).__name__}")
    n = check_positive_int(n, "n", minimum=2)
    rng = check_rng(rng)
    x = sample_p(n, rng)
    if np.shape(x)[:1] != (n,):
        raise ValueError(f"sample_p(n, rng) must return n={n} samples along axis 0, got shape {np.shape(x)}")
    lp = check_array(log_p(x), "log_p(x)", ndim=1, dtype=np.float64, allow_nonfinite=True)
    lq = check_array(log_q(x), "log_q(x)", ndim=1, dtype=np.float64, allow_nonfinite=True)
    for name, v in (("log_p(x)", lp), ("log_q(x)", lq)):
        if v.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {v.shape}")
    ratio = lp - lq
    if not np.all(np.isfinite(ratio)):
        raise ValueError(
            "log_p(x) - log_q(x) is not finite for some samples of p: q may not cover the "
            "support of p (then KL(p || q) is infinite), or a log-density returned NaN"
        )
    estimate = float(np.mean(ratio))  # [eq:kl-mc]
    standard_error = float(np.std(ratio, ddof=1) / np.sqrt(n))  # [eq:kl-mc-se]
    return estimate, standard_error
