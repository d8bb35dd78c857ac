"""What PixelCNN and PixelRNN share: the seam around an exact image likelihood.

A subclass sets ``image_shape``, ``levels``, ``dtype`` and ``_params`` (None until
built) and provides ``build()``, ``_loss_and_grads(X, copy=True)`` (mean NLL of checked images and its
gradients; ``copy=False`` lets training take live buffers) and ``_log_prob(X)`` (exact log p(x) per image);
this base adds the input check, ``loss_and_grads``, the training entry point, scoring, sampling of one pixel
and persistence.
"""
from __future__ import annotations

import numpy as np

from .._validation import NotFittedError
from ..nn.functional import log_softmax, sigmoid
from . import _training
from ._persist import Persistent


def draw_pixel(logits, u, levels):
    """One pixel per row from its conditional, given uniforms ``u`` (N,): the inverse CDF.

    ``logits`` is (N,) for ``levels=2`` (``x ~ Bernoulli(sigmoid(l))``) or (N, levels)
    (softmax).  Returns uint8 values in ``0 .. levels-1``.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if levels == 2:
        return (u < sigmoid(logits)).astype(np.uint8)
    cdf = np.cumsum(np.exp(log_softmax(logits, axis=1)), axis=1)
    return np.minimum((cdf < u[:, None]).sum(axis=1), levels - 1).astype(np.uint8)


class ImageAutoregressive(Persistent):
    """Mixin: named_parameters, fit, score_samples, score, save and load for image models."""

    def named_parameters(self) -> dict[str, np.ndarray]:
        """``{dotted name: live parameter array}``; writing into the arrays changes the model."""
        self._check_built()
        return dict(self._params)

    def _check_built(self):
        if self._params is None:
            raise NotFittedError(f"This {type(self).__name__} has no parameters yet; call fit(X), build() "
                                 f"or {type(self).__name__}.load(path) first")

    def _check_X(self, X, name="X"):
        """Images (N, H, W) with integer values in ``0 .. levels-1`` (bool, int or integral floats) -> uint8."""
        if X is None or isinstance(X, (str, bytes)):
            raise TypeError(f"{name} must be an array of images, got {type(X).__name__}")
        A = np.asarray(X)
        if A.dtype == np.bool_:
            A = A.astype(np.uint8)
        if not (np.issubdtype(A.dtype, np.integer) or np.issubdtype(A.dtype, np.floating)):
            raise TypeError(f"{name} must hold integer pixel values, got dtype {A.dtype}")
        H, W = self.image_shape
        if A.ndim != 3 or A.shape[1:] != (H, W):
            raise ValueError(f"{name} must have shape (N, {H}, {W}) (a stack of images), got {A.shape}")
        if A.shape[0] < 1:
            raise ValueError(f"{name} must hold at least one image, got shape {A.shape}")
        if np.issubdtype(A.dtype, np.floating):
            if not np.all(np.isfinite(A)):
                raise ValueError(f"{name} contains NaN or infinite values")
            if not np.all(A == np.round(A)):
                raise ValueError(f"{name} must hold integer pixel values 0..{self.levels - 1}, got fractions")
        lo, hi = A.min(), A.max()
        if lo < 0 or hi > self.levels - 1:
            raise ValueError(f"{name} values must lie in 0..{self.levels - 1} (levels={self.levels}), "
                             f"got range [{lo:g}, {hi:g}]")
        return A.astype(np.uint8)

    def loss_and_grads(self, X):
        """Mean negative log-likelihood of ``X`` in nats per image, and its gradients.

        Parameters
        ----------
        X : array_like of shape (N, H, W), integers in ``0 .. levels-1``

        Returns
        -------
        loss : float
            :math:`-\\frac1N \\sum_n \\log p(x_n)`, exact (the model's chain rule of pixel conditionals).
        grads : dict {name: ndarray}
            Fresh arrays with the keys and shapes of :meth:`named_parameters`.
        """
        self._check_built()
        return self._loss_and_grads(self._check_X(X))

    def _batch_step(self, Xb, rng, beta):
        return self._loss_and_grads(Xb.reshape((-1,) + self.image_shape), copy=False)

    def _evaluate(self, X, rng):
        return -float(np.mean(self._log_prob(X.reshape((-1,) + self.image_shape)), dtype=np.float64))

    def fit(self, X, epochs=10, batch_size=32, lr=1e-3, *, validation=None, progress=True, checkpoint=None,
            resume=None, lr_decay=1.0, weight_decay=0.0, keep_best=False, callback=None,
            lr_schedule="exponential", lr_warmup=0):
        """Train by minibatch Adam on the mean NLL; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (N, H, W), integers in ``0 .. levels-1``
        epochs, batch_size : int
        lr : float
            Adam's learning rate (torch defaults otherwise).
        validation : array_like of shape (N_v, H, W) or None
            Exact NLL after every epoch (``history_["validation_nll"]``).
        progress : bool
            Progress bar (only on a TTY).
        checkpoint, resume, lr_decay, weight_decay, keep_best, callback, lr_schedule, lr_warmup
            As in :meth:`probgen.models.VAE.fit` (shared training loop).

        Notes
        -----
        Without parameters, :meth:`build` runs first; otherwise training continues from them.
        """
        epochs, batch_size, lr, _, lr_decay, weight_decay = _training.check_fit_args(
            epochs, batch_size, lr, 0, lr_decay, weight_decay)
        _training.check_schedule(lr_schedule, lr_warmup, lr_decay)
        X = self._check_X(X)
        if validation is not None:
            validation = self._check_X(validation, "validation")
            validation = validation.reshape(validation.shape[0], -1)
        if self._params is None:
            self.build()
        return _training.train(self, X.reshape(X.shape[0], -1), epochs=epochs, batch_size=batch_size, lr=lr,
                               validation=validation, progress=progress, checkpoint=checkpoint, resume=resume,
                               kl_warmup=None, lr_decay=lr_decay, weight_decay=weight_decay, keep_best=keep_best,
                               callback=callback,
                               lr_schedule=lr_schedule, lr_warmup=lr_warmup, desc=type(self).__name__)

    def score_samples(self, X):
        """Exact :math:`\\log p(x)` per image in nats, the chain rule in raster order ``[eq:chain-rule]``.

        Returns
        -------
        ndarray of shape (N,)
        """
        self._check_built()
        return self._log_prob(self._check_X(X))

    def score(self, X) -> float:
        """Mean exact log-likelihood per image (nats)."""
        return float(np.mean(self.score_samples(X), dtype=np.float64))


    @classmethod
    def _from_config(cls, cfg):
        cfg["image_shape"] = tuple(cfg["image_shape"])
        return cls(**cfg).build()

