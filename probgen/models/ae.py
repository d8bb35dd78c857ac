"""Deterministic autoencoder with an L2 reconstruction loss, on :mod:`probgen.nn` layers.

Encoder and decoder are :func:`probgen.nn.layers.mlp` networks; the loss is the mean
squared error of :func:`probgen.nn.losses.mse_forward` averaged over the batch, and the
backward pass is the layers' own (``docs/autoencoder.md``).
"""
from __future__ import annotations

import numpy as np

from .._validation import (
    NotFittedError,
    check_array,
    check_dtype,
    check_option,
    check_positive_int,
    check_rng,
)
from ..nn.layers import mlp
from ..nn.losses import mse_backward, mse_forward
from . import _training
from ._persist import Persistent
from .vae import _check_hidden

__all__ = ["Autoencoder"]



class Autoencoder(Persistent):
    """MLP autoencoder :math:`\\hat x = g(f(x))` trained on the squared error ``[eq:ae-loss]``.

    Parameters
    ----------
    latent_dim : int
        Width :math:`M` of the code :math:`f(x)`.
    hidden : tuple of int
        Hidden widths of the encoder; the decoder mirrors them (``()``: linear maps).
    activation : {"relu", "tanh", "leaky_relu", "sigmoid", "softplus"}
        Between the linear layers; the code and the output are linear.
    rng : None, int or numpy.random.Generator
        Initial weights, then the shuffling of ``fit``.
    dtype : float32 or float64

    Attributes
    ----------
    n_features_in_ : int
    encoder, decoder : probgen.nn.layers.Sequential
    history_ : dict of lists
        ``epoch``, ``train_loss`` (mean of the minibatch losses), ``validation_loss``, ``lr``.

    Notes
    -----
    With linear maps (``hidden=()``) the optimum spans the principal subspace
    (Baldi & Hornik, 1989), the link to PCA drawn in ``docs/autoencoder.md``.
    """

    _score_name = "loss"
    _higher_is_better = False

    def __init__(self, latent_dim=2, hidden=(256,), activation="relu", rng=None, dtype=np.float64):
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.hidden = _check_hidden(hidden)
        self.activation = check_option(activation, "activation",
                                       ("relu", "tanh", "leaky_relu", "sigmoid", "softplus"))
        check_rng(rng)
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.n_features_in_ = None
        self.history_ = None
        self.encoder = self.decoder = None
        self._params = None

    def _config(self) -> dict:
        return {"latent_dim": self.latent_dim, "hidden": list(self.hidden), "activation": self.activation,
                "dtype": self.dtype.name, "n_features": self.n_features_in_}

    def build(self, n_features):
        """Create freshly initialised encoder and decoder for width ``n_features``; returns ``self``."""
        D = check_positive_int(n_features, "n_features")
        self._rng = check_rng(self.rng)
        self.n_features_in_ = D
        self.encoder = mlp((D, *self.hidden, self.latent_dim), self.activation, rng=self._rng, dtype=self.dtype)
        self.decoder = mlp((self.latent_dim, *reversed(self.hidden), D), self.activation, rng=self._rng,
                           dtype=self.dtype)
        self._params = self.named_parameters()
        return self

    def named_parameters(self) -> dict[str, np.ndarray]:
        """``{"encoder.0.W": ..., "decoder.2.b": ...}``: live arrays of both networks."""
        if self.encoder is None:
            raise NotFittedError("This Autoencoder has no parameters yet; call fit(X), build(n_features) "
                                 "or Autoencoder.load(path) first")
        return {**self.encoder.named_parameters("encoder"), **self.decoder.named_parameters("decoder")}

    def _check_X(self, X, name="X"):
        self.named_parameters()
        return check_array(X, name, dtype=self.dtype, n_features=self.n_features_in_)

    # ------------------------------------------------------------------ the seam
    def _loss_and_grads(self, X):
        self.encoder._prepare_backward()  # the backward below writes every gradient
        self.decoder._prepare_backward()
        code = self.encoder.forward(X)
        value, cache = mse_forward(self.decoder.forward(code), X)  # [eq:ae-loss]
        N = X.shape[0]
        d_xhat = mse_backward(np.full(N, 1.0 / N, dtype=self.dtype), cache)  # mean over the batch
        d_code = self.decoder.backward(d_xhat)  # [eq:ae-backward]
        self.encoder.backward(d_code, need_dx=False)
        loss = float(np.mean(value, dtype=np.float64))
        return loss, {**self.encoder.named_grads("encoder"), **self.decoder.named_grads("decoder")}

    def loss_and_grads(self, X):
        """Mean reconstruction loss ``[eq:ae-loss]`` of ``X`` (N, D) and its gradients (fresh arrays).

        Returns
        -------
        loss : float
            :math:`\\frac1N\\sum_n \\frac1D \\lVert g(f(x_n)) - x_n \\rVert^2`.
        grads : dict {name: ndarray}
            Keys of :meth:`named_parameters`.
        """
        loss, grads = self._loss_and_grads(self._check_X(X))
        return loss, {k: g.copy() for k, g in grads.items()}

    def _batch_step(self, Xb, rng, beta):
        return self._loss_and_grads(Xb)

    def _evaluate(self, X, rng):
        return float(np.mean(self.reconstruction_error(X), dtype=np.float64))

    def fit(self, X, epochs=10, batch_size=100, lr=1e-3, *, validation=None, progress=True, checkpoint=None,
            resume=None, lr_decay=1.0, weight_decay=0.0, keep_best=False, callback=None,
            lr_schedule="exponential", lr_warmup=0):
        """Minibatch Adam on the reconstruction loss; returns ``self``.

        The arguments mean what they mean for :meth:`probgen.models.VAE.fit` (no KL
        warm-up here); ``keep_best`` keeps the lowest validation loss.
        """
        return _training.fit_flat(self, X, validation=validation, desc="Autoencoder", epochs=epochs, batch_size=batch_size,
                                  lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, lr_schedule=lr_schedule,
                                  lr_warmup=lr_warmup, progress=progress, checkpoint=checkpoint, resume=resume,
                                  keep_best=keep_best, callback=callback)

    # ------------------------------------------------------------------ use
    def encode(self, X):
        """Codes :math:`f(x)`, shape (N, M)."""
        X = self._check_X(X)
        return self.encoder.forward(X)

    def decode(self, Z):
        """Reconstructions :math:`g(z)` from codes (N, M), shape (N, D)."""
        self.named_parameters()
        Z = check_array(Z, "Z", dtype=self.dtype, n_features=self.latent_dim)
        return self.decoder.forward(Z)

    def reconstruct(self, X):
        """:math:`g(f(x))`, shape (N, D)."""
        return self.decoder.forward(self.encode(X))

    def reconstruction_error(self, X):
        """Per-example :math:`\\frac1D\\lVert g(f(x)) - x\\rVert^2` ``[eq:ae-loss]``, shape (N,)."""
        X = self._check_X(X)
        return mse_forward(self.decoder.forward(self.encoder.forward(X)), X)[0]

    # ------------------------------------------------------------------ persistence

    @classmethod
    def _from_config(cls, cfg):
        D = cfg.pop("n_features")
        return cls(**{**cfg, "hidden": tuple(cfg["hidden"])}).build(D)

