"""Vector-quantised VAE (VQ-VAE) with MLP encoder and decoder over flattened inputs.

The encoder maps ``x`` (D,) to ``n_latents`` vectors of width ``code_dim``; each is replaced by its
nearest codebook vector (:func:`probgen.kernels.codebook.nearest_codebook`, ``[eq:vq-nearest]``);
the decoder maps the quantised vectors back to logits (Bernoulli) or means (squared error).  The
loss, the straight-through gradient, the EMA codebook update and the dead-code restarts are derived
in ``docs/vqvae.md``; the PixelCNN prior over the codes and the likelihood bound live in
:mod:`probgen.models.vq_prior`.
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
from ..kernels.codebook import code_sums, nearest_codebook
from ..nn.layers import mlp
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward, mse_backward, mse_forward
from . import _training, vq_prior
from ._persist import load_model, save_model
from .vae import _check_hidden
from .vq_codebook import _perplexity_of_counts, code_perplexity, ema_codebook_update, restart_dead_codes

__all__ = ["VQVAE", "ema_codebook_update", "code_perplexity", "restart_dead_codes"]


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
    restart_dead : bool
        During ``fit``, every ``restart_every`` minibatches, move each code that was assigned fewer
        than ``dead_threshold`` encoder outputs in those minibatches to a randomly chosen encoder
        output of the current minibatch ``[eq:vq-restart]`` (a remedy for codebook collapse).
    dead_threshold : float
        Usage count (summed over the ``restart_every`` minibatches and all latent positions) below
        which a code is dead; 1 means "not used at all".
    restart_every : int
        Minibatches between two checks.
    rng : None, int or numpy.random.Generator
        Initial weights and codebook, the shuffling of ``fit`` and the restart draws.
    dtype : float32 or float64

    Attributes
    ----------
    encoder, decoder : probgen.nn.layers.Sequential
    codebook : ndarray of shape (K, C)
    history_ : dict of lists
        As the other neural models, plus per epoch ``n_restarts`` (codes restarted) and
        ``train_perplexity`` (perplexity of the codes the epoch's minibatches used, before any
        restart of that minibatch).
    prior_ : probgen.models.PixelCNN or None
        The prior over the code grid, set by :meth:`fit_prior`.
    """

    _score_name = "loss"
    _higher_is_better = False

    def __init__(self, n_latents=4, code_dim=8, n_codes=32, hidden=(256,), activation="relu",
                 likelihood="bernoulli", beta=0.25, codebook_update="loss", decay=0.99, eps=1e-5,
                 restart_dead=False, dead_threshold=1.0, restart_every=10, rng=None, dtype=np.float64):
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
        if not isinstance(restart_dead, (bool, np.bool_)):
            raise TypeError(f"restart_dead must be True or False, got {restart_dead!r}")
        self.restart_dead = bool(restart_dead)
        self.dead_threshold = check_positive_float(dead_threshold, "dead_threshold")
        self.restart_every = check_positive_int(restart_every, "restart_every")
        check_rng(rng)
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.n_features_in_ = None
        self.history_ = None
        self.encoder = self.decoder = self.codebook = None
        self._params = None
        self.prior_ = None

    def _config(self) -> dict:
        return {"n_latents": self.n_latents, "code_dim": self.code_dim, "n_codes": self.n_codes,
                "hidden": list(self.hidden), "activation": self.activation, "likelihood": self.likelihood,
                "beta": self.beta, "codebook_update": self.codebook_update, "decay": self.decay,
                "eps": self.eps, "restart_dead": self.restart_dead, "dead_threshold": self.dead_threshold,
                "restart_every": self.restart_every, "dtype": self.dtype.name, "n_features": self.n_features_in_}

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
        self._reset_usage()
        self.prior_ = None
        params = self.named_parameters()
        # with EMA the codebook is not an optimiser parameter: fit moves it by [eq:vq-ema]
        self._params = params if self.codebook_update == "loss" else {
            k: v for k, v in params.items() if k != "codebook"}
        return self

    def _reset_ema(self):
        # one pseudo-observation per code at its current vector: e_k = m_k / N_k from the start, and an
        # unused code decays m_k and N_k together instead of being divided by ~eps (docs/vqvae.md)
        self.ema_cluster_size_ = np.ones(self.n_codes, dtype=self.dtype)
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
        self.encoder._prepare_backward()  # the backward below writes every gradient
        self.decoder._prepare_backward()
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
        if use_codebook_loss:  # d/de of |sg[z_e] - e|^2
            d_codebook = code_sums(idx.ravel(), diff.reshape(N * L, C), self.n_codes, scale=-2.0 / N)
        else:
            d_codebook = np.zeros_like(self.codebook)
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
        C, ema = self.code_dim, self.codebook_update == "ema"
        z_e, idx = z_e.reshape(-1, C), idx.ravel()
        if ema:
            grads = {k: v for k, v in grads.items() if k != "codebook"}
            self.ema_cluster_size_, self.ema_code_sum_, new = ema_codebook_update(
                self.ema_cluster_size_, self.ema_code_sum_, z_e, idx, decay=self.decay, eps=self.eps)
            np.copyto(self.codebook, new)
        counts = np.bincount(idx, minlength=self.n_codes)
        self._epoch_counts += counts
        if self.restart_dead:
            self._usage += counts
            self._batches_since_check += 1
            if self._batches_since_check == self.restart_every:
                stats = (self.ema_cluster_size_, self.ema_code_sum_, self.eps) if ema else (None, None, None)
                dead, new, N, m = restart_dead_codes(self.codebook, self._usage, z_e, threshold=self.dead_threshold,
                                                     rng=rng, cluster_size=stats[0], code_sum=stats[1], eps=stats[2])
                np.copyto(self.codebook, new)
                if ema:
                    self.ema_cluster_size_, self.ema_code_sum_ = N, m
                else:  # this batch's gradient was for the old vector
                    grads["codebook"][dead] = 0.0
                self._epoch_restarts += dead.size
                self._usage[:] = 0
                self._batches_since_check = 0
        return loss, grads

    def _evaluate(self, X, rng):
        return self._loss_and_grads(X)[0]

    def fit(self, X, epochs=10, batch_size=100, lr=1e-3, *, validation=None, progress=True, callback=None):
        """Minibatch Adam on the encoder and decoder (and the codebook for ``"loss"``); returns ``self``.

        With ``restart_dead`` dead codes are restarted every ``restart_every`` minibatches
        ``[eq:vq-restart]`` (the count starts afresh with every call).  Training changes the codes,
        so a fitted :attr:`prior_` is dropped: call :meth:`fit_prior` again.
        """
        epochs, batch_size, lr, _, _, _ = _training.check_fit_args(epochs, batch_size, lr, 0, 1.0, 0.0)
        if self._params is None:
            self.build(check_array(X, "X", dtype=self.dtype).shape[1])
        X = self._check_X(X)
        if validation is not None:
            validation = self._check_X(validation, "validation")
        self.prior_ = None
        self._reset_usage()

        def per_epoch(epoch, model):  # code usage of the epoch, then the caller's callback
            self.history_.setdefault("n_restarts", []).append(self._epoch_restarts)
            self.history_.setdefault("train_perplexity", []).append(_perplexity_of_counts(self._epoch_counts))
            self._reset_usage(window=False)
            return callback is not None and callback(epoch, model)

        return _training.train(self, X, epochs=epochs, batch_size=batch_size, lr=lr, validation=validation,
                               progress=progress, callback=per_epoch, desc="VQVAE")

    def _reset_usage(self, window=True):
        """Zero the epoch's code counts and restarts and (``window``) the restart window's usage."""
        self._epoch_counts = np.zeros(self.n_codes, dtype=np.int64)
        self._epoch_restarts = 0
        if window:
            self._usage = np.zeros(self.n_codes)
            self._batches_since_check = 0

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

    # ------------------------------------------------------------------ the prior and the bound
    def fit_prior(self, X, *, grid=None, channels=32, n_layers=3, kernel_size=3, first_kernel_size=3, epochs=20,
                  batch_size=32, lr=1e-3, validation=None, progress=True, rng=None):
        """Fit a PixelCNN prior to the codes of ``X`` viewed as ``grid`` ``[eq:vq-prior]``; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (N, D)
            Training data; its codes ``encode(X)`` (N, L) are reshaped to (N, h, w) in raster order.
        grid : (int, int) or None
            :math:`(h, w)` with :math:`hw = L` (``n_latents``); None: the most square factorisation
            (:math:`h \\le w`, e.g. (1, L) for prime L).
        channels, n_layers, kernel_size, first_kernel_size
            The :class:`~probgen.models.PixelCNN` architecture (``levels = n_codes``, at most 256).
        epochs, batch_size, lr, validation, progress
            As in :meth:`probgen.models.PixelCNN.fit`; ``validation`` is data (N_v, D), encoded here.
        rng : None, int or numpy.random.Generator
            The prior's initial weights and shuffling.
        """
        self.prior_ = vq_prior.fit_prior(self, X, grid=grid, channels=channels, n_layers=n_layers,
                                         kernel_size=kernel_size, first_kernel_size=first_kernel_size, epochs=epochs,
                                         batch_size=batch_size, lr=lr, validation=validation, progress=progress, rng=rng)
        return self

    def code_log_prob(self, codes):
        """Exact :math:`\\log p(z)` of codes (N, L) under :attr:`prior_`, nats, shape (N,) ``[eq:vq-prior]``."""
        return vq_prior.code_log_prob(self, codes)

    def sample_codes(self, n, rng=None):
        """``n`` code strings (n, L), int64, drawn from :attr:`prior_` (raster order over the grid)."""
        return vq_prior.sample_codes(self, n, rng)

    def sample(self, n, rng=None, *, kind="mean"):
        """Decode ``n`` code grids drawn from :attr:`prior_`: shape (n, D), the model's dtype.

        ``kind="mean"``: the decoder's mean, i.e. the Bernoulli probabilities :math:`\\sigma(\\ell)`
        (``likelihood="bernoulli"``) or the squared-error model's output; ``kind="draw"``: binary
        draws :math:`x_d \\sim \\mathrm{Bernoulli}(\\sigma(\\ell_d))` from the same ``rng``
        (Bernoulli models only).
        """
        return vq_prior.sample(self, n, rng, kind)

    def log_likelihood_bound(self, X):
        """:math:`\\log p(z^*) + \\log p(x \\mid z^*) \\le \\log p(x)` per row, nats ``[eq:vq-bound]``.

        :math:`z^* =` ``encode(x)``; needs :attr:`prior_`, ``likelihood="bernoulli"`` and binary ``X``
        (the decoder is then a normalised pmf over :math:`\\{0,1\\}^D`).
        """
        return vq_prior.log_likelihood_bound(self, X)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Parameters, configuration and :attr:`prior_` (if fitted) to one ``.npz`` (atomic, no pickle).

        The EMA statistics are not kept.
        """
        if self.prior_ is None:
            save_model(self, path)
        else:
            vq_prior.save_with_prior(self, path)

    @classmethod
    def _from_config(cls, cfg):
        D = cfg.pop("n_features")
        saved_prior = cfg.pop("prior", None)
        model = cls(**{**cfg, "hidden": tuple(cfg["hidden"])}).build(D)
        # with a prior, load_model fills (and checks) both parameter sets through a bundle of the two
        return model if saved_prior is None else vq_prior.attach_saved_prior(model, saved_prior)

    @classmethod
    def load(cls, path) -> VQVAE:
        """A model (with its prior, if saved) read back from :meth:`save`.

        EMA statistics restart from the loaded codebook.
        """
        model = vq_prior.unbundle(load_model(cls, path)[0])
        model._reset_ema()
        return model
