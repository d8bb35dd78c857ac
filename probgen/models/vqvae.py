"""Vector-quantised VAE (VQ-VAE) with MLP encoder and decoder over flattened inputs.

The encoder maps ``x`` (D,) to ``n_latents`` vectors of width ``code_dim``; each is replaced by its
nearest codebook vector (:func:`probgen.kernels.codebook.nearest_codebook`, ``[eq:vq-nearest]``);
the decoder maps the quantised vectors back to logits (Bernoulli) or means (squared error).  The
loss, the straight-through gradient and the EMA codebook update are derived in ``docs/vqvae.md``.
"""
from __future__ import annotations

import numpy as np

from .._validation import (
    NotFittedError,
    check_array,
    check_dtype,
    check_nonnegative_float,
    check_option,
    check_positive_float,
    check_positive_int,
    check_rng,
)
from ..kernels.codebook import nearest_codebook
from ..nn.layers import mlp
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward, mse_backward, mse_forward
from . import _training
from ._persist import load_model, save_model
from .vae import _check_hidden

__all__ = ["VQVAE", "ema_codebook_update", "code_perplexity"]


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
    sums = np.zeros_like(code_sum)
    np.add.at(sums, indices, z_e)
    cluster_size = decay * cluster_size + (1.0 - decay) * counts  # [eq:vq-ema]
    code_sum = decay * code_sum + (1.0 - decay) * sums
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + K * eps) * n  # Laplace smoothing
    return cluster_size, code_sum, code_sum / smoothed[:, None]


def code_perplexity(indices, n_codes):
    """:math:`\\exp(-\\sum_k p_k \\log p_k)` of the code frequencies ``[eq:vq-perplexity]``."""
    p = np.bincount(np.ravel(indices), minlength=n_codes) / np.size(indices)
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


class VQVAE:
    """VQ-VAE: encoder, nearest-codebook quantiser, decoder ``[eq:vq-loss]``.

    Parameters
    ----------
    n_latents : int
        Number L of code vectors per example (a 1-D latent).
    code_dim : int
        Width C of each code vector.
    n_codes : int
        Codebook size K.
    hidden : tuple of int
        Hidden widths of the encoder MLP (D -> ... -> L C); the decoder mirrors them.
    activation : {"relu", "tanh", "leaky_relu", "sigmoid", "softplus"}
    likelihood : {"bernoulli", "squared_error"}
        Reconstruction term: Bernoulli NLL from logits (binary data) or the squared error.
    beta : float
        Commitment weight.
    codebook_update : {"loss", "ema"}
        Learn the codebook by gradient of the codebook loss, or by exponential moving averages.
    decay, eps : float
        EMA decay :math:`\\gamma` and Laplace-smoothing constant (``"ema"`` only).
    rng : None, int or numpy.random.Generator
    dtype : float32 or float64

    Attributes
    ----------
    encoder, decoder : probgen.nn.layers.Sequential
    codebook : ndarray of shape (K, C)
    history_ : dict of lists
    """

    _score_name = "loss"
    _higher_is_better = False

    def __init__(self, n_latents=4, code_dim=8, n_codes=32, hidden=(256,), activation="relu",
                 likelihood="bernoulli", beta=0.25, codebook_update="loss", decay=0.99, eps=1e-5,
                 rng=None, dtype=np.float64):
        self.n_latents = check_positive_int(n_latents, "n_latents")
        self.code_dim = check_positive_int(code_dim, "code_dim")
        self.n_codes = check_positive_int(n_codes, "n_codes")
        self.hidden = _check_hidden(hidden)
        self.activation = check_option(activation, "activation",
                                       ("relu", "tanh", "leaky_relu", "sigmoid", "softplus"))
        self.likelihood = check_option(likelihood, "likelihood", ("bernoulli", "squared_error"))
        self.beta = check_nonnegative_float(beta, "beta")
        self.codebook_update = check_option(codebook_update, "codebook_update", ("loss", "ema"))
        self.decay = check_nonnegative_float(decay, "decay")
        if self.decay >= 1.0:
            raise ValueError(f"decay must be < 1, got {decay}")
        self.eps = check_positive_float(eps, "eps")
        check_rng(rng)
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.n_features_in_ = None
        self.history_ = None
        self.encoder = self.decoder = self.codebook = None
        self._params = None

    def _config(self) -> dict:
        return {"n_latents": self.n_latents, "code_dim": self.code_dim, "n_codes": self.n_codes,
                "hidden": list(self.hidden), "activation": self.activation, "likelihood": self.likelihood,
                "beta": self.beta, "codebook_update": self.codebook_update, "decay": self.decay,
                "eps": self.eps, "dtype": self.dtype.name, "n_features": self.n_features_in_}

    def build(self, n_features):
        """Fresh encoder, decoder and codebook for width ``n_features``; returns ``self``."""
        D = check_positive_int(n_features, "n_features")
        self._rng = check_rng(self.rng)
        self.n_features_in_ = D
        LC = self.n_latents * self.code_dim
        self.encoder = mlp((D, *self.hidden, LC), self.activation, rng=self._rng, dtype=self.dtype)
        self.decoder = mlp((LC, *reversed(self.hidden), D), self.activation, rng=self._rng, dtype=self.dtype)
        K = self.n_codes
        self.codebook = self._rng.uniform(-1.0 / K, 1.0 / K, size=(K, self.code_dim)).astype(self.dtype)
        self._reset_ema()
        params = self.named_parameters()
        # with EMA the codebook is not an optimiser parameter: fit moves it by [eq:vq-ema]
        self._params = params if self.codebook_update == "loss" else {
            k: v for k, v in params.items() if k != "codebook"}
        return self

    def _reset_ema(self):
        self.ema_cluster_size_ = np.zeros(self.n_codes, dtype=self.dtype)
        self.ema_code_sum_ = self.codebook.copy()

    def named_parameters(self) -> dict[str, np.ndarray]:
        """``encoder.*``, ``decoder.*`` and ``codebook``: live arrays."""
        if self.encoder is None:
            raise NotFittedError("This VQVAE has no parameters yet; call fit(X), build(n_features) "
                                 "or VQVAE.load(path) first")
        return {**self.encoder.named_parameters("encoder"), **self.decoder.named_parameters("decoder"),
                "codebook": self.codebook}

    def _check_X(self, X, name="X"):
        self.named_parameters()
        return check_array(X, name, dtype=self.dtype, n_features=self.n_features_in_)

    # ------------------------------------------------------------------ forward and backward
    def _quantise(self, z_e):
        """``z_e`` (N, L, C) -> codes (N, L) and ``z_q = e_codes`` (N, L, C) ``[eq:vq-nearest]``."""
        N, L, C = z_e.shape
        idx = nearest_codebook(z_e.reshape(N * L, C), self.codebook).reshape(N, L)
        return idx, self.codebook[idx]

    def _recon(self, out, X):
        """Per-example reconstruction term and the function mapping its upstream grad to d_out."""
        if self.likelihood == "bernoulli":
            value, cache = bernoulli_nll_forward(out, X)
            return value, lambda dv: bernoulli_nll_backward(dv, cache)
        value, cache = mse_forward(out, X)
        D = X.shape[1]
        return value * D, lambda dv: mse_backward(dv * D, cache)  # sum of squares

    def _loss_and_grads(self, X, return_codes=False):
        N = X.shape[0]
        L, C = self.n_latents, self.code_dim
        self.encoder.zero_grad()
        self.decoder.zero_grad()
        z_e = self.encoder.forward(X).reshape(N, L, C)
        idx, z_q = self._quantise(z_e)
        rec, rec_backward = self._recon(self.decoder.forward(z_q.reshape(N, L * C)), X)
        diff = z_e - z_q  # value of z_e - e for both stop-gradient terms
        sq = np.einsum("nlc,nlc->n", diff, diff)
        use_codebook_loss = self.codebook_update == "loss"
        per_example = rec + (1.0 + self.beta if use_codebook_loss else self.beta) * sq  # [eq:vq-loss]
        loss = float(np.mean(per_example, dtype=np.float64))
        d_out = rec_backward(np.full(N, 1.0 / N, dtype=self.dtype))
        d_zq = self.decoder.backward(d_out).reshape(N, L, C)
        d_ze = d_zq + (2.0 * self.beta / N) * diff  # straight-through copy + commitment [eq:vq-straight-through]
        self.encoder.backward(d_ze.reshape(N, L * C), need_dx=False)
        d_codebook = np.zeros_like(self.codebook)
        if use_codebook_loss:
            np.add.at(d_codebook, idx.ravel(), (-2.0 / N) * diff.reshape(N * L, C))  # d/de of |sg[z_e] - e|^2
        grads = {**self.encoder.named_grads("encoder"), **self.decoder.named_grads("decoder"),
                 "codebook": d_codebook}
        if return_codes:
            return loss, grads, z_e, idx, d_zq
        return loss, grads

    def loss_and_grads(self, X):
        """Mean loss ``[eq:vq-loss]`` of ``X`` (N, D) and its gradients (fresh arrays).

        With ``codebook_update="ema"`` the codebook term is left out of the loss (EMA replaces
        it), so the codebook's gradient is zero.
        """
        loss, grads = self._loss_and_grads(self._check_X(X))
        return loss, {k: g.copy() for k, g in grads.items()}

    def _batch_step(self, Xb, rng, beta):
        loss, grads, z_e, idx, _ = self._loss_and_grads(Xb, return_codes=True)
        if self.codebook_update == "ema":
            grads = {k: v for k, v in grads.items() if k != "codebook"}
            C = self.code_dim
            self.ema_cluster_size_, self.ema_code_sum_, new = ema_codebook_update(
                self.ema_cluster_size_, self.ema_code_sum_, z_e.reshape(-1, C), idx.ravel(),
                decay=self.decay, eps=self.eps)
            np.copyto(self.codebook, new)
        return loss, grads

    def _evaluate(self, X, rng):
        return self._loss_and_grads(X)[0]

    def fit(self, X, epochs=10, batch_size=100, lr=1e-3, *, validation=None, progress=True, callback=None):
        """Minibatch Adam on the encoder and decoder (and the codebook for ``"loss"``); returns ``self``."""
        epochs, batch_size, lr, _, _, _ = _training.check_fit_args(epochs, batch_size, lr, 0, 1.0, 0.0)
        if self._params is None:
            self.build(check_array(X, "X", dtype=self.dtype).shape[1])
        X = self._check_X(X)
        if validation is not None:
            validation = self._check_X(validation, "validation")
        return _training.train(self, X, epochs=epochs, batch_size=batch_size, lr=lr, validation=validation,
                               progress=progress, callback=callback, desc="VQVAE")

    # ------------------------------------------------------------------ use
    def encode(self, X):
        """Codes of ``X`` (N, D), shape (N, L), int64."""
        X = self._check_X(X)
        return self._quantise(self.encoder.forward(X).reshape(X.shape[0], self.n_latents, self.code_dim))[0]

    def decode(self, codes):
        """Decoder output (logits or means), shape (N, D), from codes (N, L)."""
        self.named_parameters()
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.n_latents or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be an integer array of shape (N, {self.n_latents}), got "
                             f"{codes.dtype} {codes.shape}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_codes):
            raise ValueError(f"codes must lie in [0, {self.n_codes}), got [{codes.min()}, {codes.max()}]")
        return self.decoder.forward(self.codebook[codes].reshape(codes.shape[0], -1))

    def perplexity(self, X):
        """Perplexity of the code usage on ``X`` ``[eq:vq-perplexity]``: 1 (collapse) to K (uniform)."""
        return code_perplexity(self.encode(X), self.n_codes)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Parameters and configuration to one ``.npz`` (atomic, no pickle); EMA statistics are not kept."""
        save_model(self, path)

    @classmethod
    def _from_config(cls, cfg):
        D = cfg.pop("n_features")
        return cls(**{**cfg, "hidden": tuple(cfg["hidden"])}).build(D)

    @classmethod
    def load(cls, path) -> VQVAE:
        """A model read back from :meth:`save`; EMA statistics restart from the loaded codebook."""
        model = load_model(cls, path)[0]
        model._reset_ema()
        return model
