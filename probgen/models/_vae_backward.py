"""The VAE's forward and backward passes as module-level functions (no autograd).

Everything here works on a parameter dict ``p`` (dotted names, see
:func:`parameter_shapes`), a :class:`VAESpec` and, on the training path, a
:class:`Workspace` of preallocated buffers so that a step allocates (almost)
nothing.  Inputs are assumed valid: :class:`probgen.models.VAE` checks them.

The backward pass :func:`loss_and_grads` is written out in chain-rule order with
the names of ``docs/vae.md`` ("The backward pass"): ``d_out`` (logits or mean),
the decoder layers, ``d_z``, then ``d_mu`` and ``d_log_var`` through the
reparameterisation, then the encoder layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..nn.losses import gaussian_nll_backward, gaussian_nll_forward
from ._vae_kernels import BLOCK_ROWS, act_backward, bernoulli_nll_grad

__all__ = ["VAESpec", "Workspace", "parameter_shapes", "encode", "decode", "decoder_log_var", "recon_nll",
           "loss_and_grads"]


@dataclass(frozen=True)
class VAESpec:
    """Architecture and objective of a VAE (all validated by the caller)."""

    n_features: int
    latent_dim: int
    hidden: tuple
    activation: str  # "tanh" or "relu"
    likelihood: str  # "bernoulli" or "gaussian"
    estimator: str  # "analytic" (L^B) or "mc" (L^A)
    n_samples: int
    decoder_variance: float | None  # None: learned per pixel; a float: fixed sigma^2
    min_variance: float

    @property
    def learned_variance(self) -> bool:
        return self.likelihood == "gaussian" and self.decoder_variance is None


def parameter_shapes(spec: VAESpec) -> dict[str, tuple]:
    """``{name: shape}`` in a fixed order: encoder layers, the two heads, decoder layers, output.

    ``encoder.i.W`` has shape (in, out) (inputs times weights: ``h W + b``);
    ``decoder.log_excess_var`` (Gaussian, learned variance) is
    :math:`\\rho_d = \\log(\\sigma^2_d - \\sigma^2_{min})` ``[eq:vae-gaussian-floor]``.
    """
    shapes = {}
    sizes = (spec.n_features,) + tuple(spec.hidden)
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"encoder.{i}.W"], shapes[f"encoder.{i}.b"] = (a, b), (b,)
    for head in ("mu", "log_var"):
        shapes[f"encoder.{head}.W"], shapes[f"encoder.{head}.b"] = (sizes[-1], spec.latent_dim), (spec.latent_dim,)
    sizes = (spec.latent_dim,) + tuple(reversed(spec.hidden))
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"decoder.{i}.W"], shapes[f"decoder.{i}.b"] = (a, b), (b,)
    shapes["decoder.out.W"], shapes["decoder.out.b"] = (sizes[-1], spec.n_features), (spec.n_features,)
    if spec.learned_variance:
        shapes["decoder.log_excess_var"] = (spec.n_features,)
    return shapes


class Workspace:
    """Named scratch buffers, reused while the requested shape stays the same."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self._buf: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple) -> np.ndarray:
        a = self._buf.get(name)
        if a is None or a.shape != shape:
            a = self._buf[name] = np.empty(shape, self.dtype)
        return a


def _act(h, kind):
    """Hidden activation in place: ``tanh`` or ``relu``."""
    if kind == "tanh":
        np.tanh(h, out=h)
    else:
        np.maximum(h, 0, out=h)


def _mlp(p, prefix, n_layers, x, kind, ws, tag):
    """``n_layers`` hidden layers ``h = act(h W + b)``; returns the list of outputs ``[x, h_1, ...]``."""
    hs = [x]
    for i in range(n_layers):
        W, b = p[f"{prefix}.{i}.W"], p[f"{prefix}.{i}.b"]
        h = ws.get(f"{tag}{i}", x.shape[:-1] + (W.shape[1],))
        np.matmul(hs[-1], W, out=h)
        h += b
        _act(h, kind)
        hs.append(h)
    return hs


def encode(p, spec: VAESpec, X, ws: Workspace):
    """Gaussian encoder ``q(z|x) = N(mu, diag exp(log_var))`` ``[eq:vae-encoder]``.

    Returns
    -------
    mu, log_var : ndarray of shape (N, M)
        Column views of one (N, 2M) buffer.
    hs : list of ndarray
        ``[X, h_1, ..., h_K]``, the hidden activations (for the backward pass).
    """
    hs = _mlp(p, "encoder", len(spec.hidden), X, spec.activation, ws, "enc.h")
    N, M = X.shape[0], spec.latent_dim
    # both heads in one product: [mu | log_var] = h [W_mu | W_log_var] + [b_mu | b_log_var]
    W, b = ws.get("heads.W", (hs[-1].shape[1], 2 * M)), ws.get("heads.b", (2 * M,))
    W[:, :M], W[:, M:] = p["encoder.mu.W"], p["encoder.log_var.W"]
    b[:M], b[M:] = p["encoder.mu.b"], p["encoder.log_var.b"]
    heads = ws.get("heads", (N, 2 * M))
    np.matmul(hs[-1], W, out=heads)
    heads += b
    mu, log_var = heads[:, :M], heads[:, M:]
    return mu, log_var, hs


def decode(p, spec: VAESpec, Z, ws: Workspace):
    """Decoder network: ``Z`` (R, M) to the output (R, D), logits or Gaussian means.

    Returns
    -------
    out : ndarray of shape (R, D)
    gs : list of ndarray
        ``[Z, g_1, ..., g_K]`` hidden activations.
    """
    gs = _mlp(p, "decoder", len(spec.hidden), Z, spec.activation, ws, "dec.g")
    out = ws.get("out", (Z.shape[0], spec.n_features))
    np.matmul(gs[-1], p["decoder.out.W"], out=out)
    out += p["decoder.out.b"]
    return out, gs


def decoder_log_var(p, spec: VAESpec, dtype):
    """Gaussian decoder log-variance: (D,) learned with a floor, or a 0-d fixed one ``[eq:vae-gaussian-floor]``."""
    if spec.decoder_variance is not None:
        return np.asarray(np.log(spec.decoder_variance), dtype=dtype)
    return np.log(spec.min_variance + np.exp(p["decoder.log_excess_var"]))  # [eq:vae-gaussian-floor]


def recon_nll(p, spec: VAESpec, out, X, ws: Workspace, w=None):
    """``-log p(x_n | z_r)`` for the R = L N decoded rows, and (if ``w``) its gradients.

    Parameters
    ----------
    out : ndarray of shape (R, D)
        Decoder output (logits or means); row ``r`` belongs to example ``r mod N``.
    X : ndarray of shape (N, D)
    w : float or None
        Weight of each row in the loss (``1/(N L)``); None skips the gradient.

    Returns
    -------
    nll : ndarray of shape (R,)
    d_out : ndarray of shape (R, D) or None
    d_rho : ndarray of shape (D,) or None
        Gradient of the learned ``decoder.log_excess_var`` (Gaussian only).
    """
    R, D = out.shape
    if spec.likelihood == "bernoulli":
        d_out = None if w is None else ws.get("d_out", (R, D))
        B = min(R, BLOCK_ROWS)
        nll = bernoulli_nll_grad(out, X, w, grad=d_out, db=ws.get("d_out.sum", (D,)), t=ws.get("t", (B, D)),
                                 u=ws.get("u", (B, D)), nll=ws.get("nll", (R,)))  # [eq:vae-bernoulli]
        return nll, d_out, None
    lv = decoder_log_var(p, spec, out.dtype)
    mean = out.reshape(R // X.shape[0], X.shape[0], D)
    value, cache = gaussian_nll_forward(np.broadcast_to(X, mean.shape), mean, lv)  # [eq:vae-gaussian]
    if w is None:
        return value.reshape(R), None, None
    d_mean, d_lv = gaussian_nll_backward(np.full(value.shape, w, dtype=out.dtype), cache)
    d_rho = None
    if spec.learned_variance:
        excess = np.exp(p["decoder.log_excess_var"])
        d_rho = d_lv * (excess / (spec.min_variance + excess))  # d lv / d rho  [eq:vae-backward-floor]
    return value.reshape(R), d_mean.reshape(R, D), d_rho


def _lin_backward(d_y, x, W, gW, gb, d_x=None, db=None):
    """``dW = x^T d_y``, ``db = sum_n d_y`` (copied from ``db`` if already summed), ``d_x = d_y W^T``
    (if a buffer is given) ``[eq:linear-backward]``."""
    np.matmul(x.T, d_y, out=gW)
    if db is None:
        np.sum(d_y, axis=0, out=gb)
    elif db is not gb:
        gb[...] = db
    if d_x is not None:
        np.matmul(d_y, W.T, out=d_x)
    return d_x


def loss_and_grads(p, spec: VAESpec, X, eps, ws: Workspace, grads=None, beta: float = 1.0):
    """Mean negative ELBO of a batch and its gradients, written out by the chain rule.

    Parameters
    ----------
    p : dict {name: ndarray}
        Parameters (:func:`parameter_shapes`).
    X : ndarray of shape (N, D)
    eps : ndarray of shape (L, N, M)
        Standard normal noise of the reparameterisation ``[eq:vae-reparam]``.
    ws : Workspace
    grads : dict {name: ndarray} or None
        Output buffers with ``p``'s keys and shapes (overwritten); None skips the backward pass.
    beta : float
        Weight of the KL part (1 for the ELBO; < 1 during KL warm-up).

    Returns
    -------
    loss : float
        :math:`\\frac1N \\sum_n \\frac1L \\sum_l [\\text{NLL}_{ln}] + \\beta\\,\\mathrm{KL}_n`
        (``"analytic"``, :math:`-\\mathcal{L}^B` ``[eq:vae-lb]``) or
        :math:`\\frac1{NL}\\sum_{ln} \\text{NLL}_{ln} + \\beta(\\log q - \\log p)(z_{ln})`
        (``"mc"``, :math:`-\\mathcal{L}^A` ``[eq:vae-la]``).
    elbo : float
        The same estimate at ``beta = 1``, negated: the mean ELBO.
    """
    L, N, M = eps.shape
    R = L * N
    # ---------------------------------------------------------------- forward
    mu, log_var, hs = encode(p, spec, X, ws)
    std = ws.get("std", (N, M))
    np.multiply(log_var, 0.5, out=std)
    np.exp(std, out=std)  # sigma = exp(log_var / 2)  [eq:vae-reparam]
    z = ws.get("z", (L, N, M))
    np.multiply(eps, std, out=z)
    z += mu  # z = mu + sigma * eps  [eq:vae-reparam]
    out, gs = decode(p, spec, z.reshape(R, M), ws)
    w = 1.0 / R
    nll, d_out, d_rho = recon_nll(p, spec, out, X, ws, None if grads is None else w)
    rec = float(np.sum(nll, dtype=np.float64)) / R
    if spec.estimator == "analytic":
        var = std * std
        kl = 0.5 * float(np.sum(mu * mu + var - 1.0 - log_var, dtype=np.float64)) / N  # [eq:vae-kl]
    else:
        # log q(z|x) - log p(z) = 1/2 sum_j (z^2 - eps^2 - log_var): the log(2 pi) terms cancel  [eq:vae-la]
        kl = 0.5 * (float(np.sum(z * z, dtype=np.float64)) - float(np.sum(eps * eps, dtype=np.float64))
                    - L * float(np.sum(log_var, dtype=np.float64))) / R
    loss, elbo = rec + beta * kl, -(rec + kl)
    if grads is None:
        return loss, elbo
    # ---------------------------------------------------------------- backward  [eq:vae-backward-logits]
    g = grads
    if d_rho is not None:
        g["decoder.log_excess_var"][...] = d_rho  # [eq:vae-backward-floor]
    K = len(spec.hidden)
    d_g = ws.get(f"dec.dg{K}", (R, gs[-1].shape[1])) if K else ws.get("d_z", (R, M))
    db_out = ws.get("d_out.sum", (spec.n_features,)) if spec.likelihood == "bernoulli" else None
    _lin_backward(d_out, gs[-1], p["decoder.out.W"], g["decoder.out.W"], g["decoder.out.b"], d_g, db_out)
    for i in range(K - 1, -1, -1):  # decoder hidden layers, last to first
        db = g[f"decoder.{i}.b"]
        act_backward(d_g, gs[i + 1], spec.activation, db)  # d_a = d_g * act'(a)  [eq:vae-backward-act]
        d_prev = ws.get(f"dec.dg{i}", (R, gs[i].shape[1])) if i else ws.get("d_z", (R, M))
        _lin_backward(d_g, gs[i], p[f"decoder.{i}.W"], g[f"decoder.{i}.W"], db, d_prev, db)
        d_g = d_prev
    d_z = d_g.reshape(L, N, M)
    if spec.estimator == "mc":
        d_z += (beta * w) * z  # d/dz of beta * 1/2 z^2 (the prior term)  [eq:vae-backward-z]
    d_heads = ws.get("d_heads", (N, 2 * M))
    d_mu, d_log_var = d_heads[:, :M], d_heads[:, M:]
    np.sum(d_z, axis=0, out=d_mu)  # dz/dmu = 1  [eq:vae-backward-mu]
    d_z *= eps
    np.sum(d_z, axis=0, out=d_log_var)
    d_log_var *= std
    d_log_var *= 0.5  # dz/dlog_var = sigma * eps / 2  [eq:vae-backward-log-var]
    if spec.estimator == "analytic":
        d_mu += (beta / N) * mu  # dKL/dmu = mu  [eq:vae-backward-kl]
        d_log_var += (0.5 * beta / N) * (var - 1.0)  # dKL/dlog_var = (sigma^2 - 1) / 2  [eq:vae-backward-kl]
    else:
        d_log_var -= 0.5 * beta / N  # d/dlog_var of -1/2 log_var (the entropy term)  [eq:vae-backward-z]
    h, M2 = hs[-1], 2 * M
    K_e = len(spec.hidden)
    d_h = ws.get(f"enc.dh{K_e}", h.shape) if K_e else None
    gW, gb = ws.get("d_heads.W", (h.shape[1], M2)), ws.get("d_heads.b", (M2,))
    # both heads read h: d_h = d_mu W_mu^T + d_log_var W_log_var^T, one product  [eq:linear-backward]
    _lin_backward(d_heads, h, ws.get("heads.W", (h.shape[1], M2)), gW, gb, d_h)
    g["encoder.mu.W"][...], g["encoder.log_var.W"][...] = gW[:, :M], gW[:, M:]
    g["encoder.mu.b"][...], g["encoder.log_var.b"][...] = gb[:M], gb[M:]
    for i in range(K_e - 1, -1, -1):  # encoder hidden layers; the first one needs no d_X
        db = g[f"encoder.{i}.b"]
        act_backward(d_h, hs[i + 1], spec.activation, db)  # [eq:vae-backward-act]
        d_prev = ws.get(f"enc.dh{i}", hs[i].shape) if i else None
        _lin_backward(d_h, hs[i], p[f"encoder.{i}.W"], g[f"encoder.{i}.W"], db, d_prev, db)
        d_h = d_prev
    return loss, elbo
