"""Variational autoencoder trained by auto-encoding variational Bayes (Kingma & Welling, 2014).

The maths lives in :mod:`probgen.models._vae_backward` (forward and backward passes
written out by the chain rule) and is derived in ``docs/vae.md``; this module is the
thin estimator: checks, initialisation, the seam (``named_parameters`` /
``loss_and_grads``), training, evaluation and persistence.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._validation import (
    NotFittedError,
    check_array,
    check_dtype,
    check_option,
    check_positive_float,
    check_positive_int,
    check_rng,
)
from ..nn.functional import sigmoid
from ..nn.init import initialize
from . import _training
from ._persist import Persistent
from ._vae_backward import (
    VAESpec,
    Workspace,
    decode,
    decoder_log_var,
    encode,
    loss_and_grads,
    parameter_shapes,
)
from ._vae_eval import elbo_estimates, importance_log_likelihood

__all__ = ["VAE"]



def _check_hidden(hidden) -> tuple:
    if isinstance(hidden, (numbers.Integral, np.integer)) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, (tuple, list)):
        raise TypeError(f"hidden must be a tuple of layer widths, got {type(hidden).__name__}")
    return tuple(check_positive_int(h, "hidden[i]") for h in hidden)


class VAE(Persistent):
    """Variational autoencoder with a Gaussian encoder and a Bernoulli or Gaussian decoder.

    Parameters
    ----------
    latent_dim : int
        :math:`M`, the dimension of :math:`z`; prior :math:`p(z) = N(0, I_M)`.
    hidden : tuple of int
        Hidden widths of the encoder; the decoder mirrors them.  ``()`` gives a
        linear encoder and decoder (the linear-Gaussian model of PPCA).
    likelihood : {"bernoulli", "gaussian"}
        Decoder :math:`p(x|z)`: Bernoulli on logits ``[eq:vae-bernoulli]`` for
        binary data, or diagonal Gaussian ``[eq:vae-gaussian]``.
    estimator : {"analytic", "mc"}
        SGVB estimator: ``"analytic"`` is :math:`\\mathcal{L}^B` (analytic KL,
        Monte-Carlo reconstruction) ``[eq:vae-lb]``; ``"mc"`` is
        :math:`\\mathcal{L}^A` (Monte-Carlo estimate of
        :math:`\\log p(x,z) - \\log q(z|x)`) ``[eq:vae-la]``.
    n_samples : int
        :math:`L`, samples of :math:`z` per example and step.
    activation : {"tanh", "relu"}
        Hidden non-linearity.
    decoder_variance : "learned" or float
        Gaussian decoder only.  ``"learned"``: one variance per pixel, shared by
        all examples, :math:`\\sigma^2_d = \\sigma^2_{min} + e^{\\rho_d}` with the
        parameter ``decoder.log_excess_var`` :math:`= \\rho`, so it never falls
        below ``min_variance`` ``[eq:vae-gaussian-floor]``.  A positive float
        fixes :math:`\\sigma^2` (no parameter; no floor applied).
    min_variance : float
        The floor :math:`\\sigma^2_{min}` of a learned decoder variance (default
        1e-3, i.e. a standard deviation of ~0.03 for data in [0, 1]).
    rng : None, int or numpy.random.Generator
        Feeds the initial weights, then the shuffling and the noise of ``fit``.
    dtype : float32 or float64
        Precision of parameters and every output.

    Attributes
    ----------
    n_features_in_ : int
        :math:`D`, set by :meth:`build` (or ``fit`` / ``load``).
    history_ : dict of lists
        Per epoch: ``epoch``, ``train_elbo`` (mean of the minibatch estimates
        during the epoch), ``validation_elbo`` (with ``validation=``), ``lr``,
        ``kl_weight``; ``best_epoch`` with ``keep_best``.

    Notes
    -----
    ELBO per example :math:`\\mathcal{L}(x) = E_q[\\log p(x|z)] - KL(q(z|x)\\|p(z))`
    ``[eq:vae-elbo-kl]``, with :math:`z = \\mu + \\sigma \\odot \\epsilon`
    ``[eq:vae-reparam]``.  Values are in nats.
    """

    _score_name = "elbo"
    _higher_is_better = True

    def __init__(self, latent_dim=20, hidden=(400,), likelihood="bernoulli", estimator="analytic",
                 n_samples=1, activation="tanh", decoder_variance="learned", min_variance=1e-3, rng=None,
                 dtype=np.float64):
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.hidden = _check_hidden(hidden)
        self.likelihood = check_option(likelihood, "likelihood", ("bernoulli", "gaussian"))
        self.estimator = check_option(estimator, "estimator", ("analytic", "mc"))
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.activation = check_option(activation, "activation", ("tanh", "relu"))
        if isinstance(decoder_variance, str):
            check_option(decoder_variance, "decoder_variance", ("learned",))
        else:
            decoder_variance = check_positive_float(decoder_variance, "decoder_variance")
        self.decoder_variance = decoder_variance
        self.min_variance = check_positive_float(min_variance, "min_variance")
        check_rng(rng)  # type check only; the generator is made in build()
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.n_features_in_ = None
        self.history_ = None
        self._params = None

    # ------------------------------------------------------------------ structure
    def _spec(self, n_features: int) -> VAESpec:
        fixed = None if self.decoder_variance == "learned" else float(self.decoder_variance)
        return VAESpec(n_features, self.latent_dim, self.hidden, self.activation, self.likelihood,
                       self.estimator, self.n_samples, fixed, self.min_variance)

    def _config(self) -> dict:
        return {"latent_dim": self.latent_dim, "hidden": list(self.hidden), "likelihood": self.likelihood,
                "estimator": self.estimator, "n_samples": self.n_samples, "activation": self.activation,
                "decoder_variance": self.decoder_variance, "min_variance": self.min_variance,
                "dtype": self.dtype.name, "n_features": self.n_features_in_}

    def build(self, n_features):
        """Create freshly initialised parameters for inputs of width ``n_features``; returns ``self``.

        Weights: Glorot uniform (tanh) or He normal (relu) from the model's ``rng``
        ``[eq:glorot]`` ``[eq:he]``; biases and ``decoder.log_excess_var`` start at 0.
        """
        D = check_positive_int(n_features, "n_features")
        self._rng = check_rng(self.rng)
        self.n_features_in_ = D
        self.spec_ = self._spec(D)
        init = "glorot_uniform" if self.activation == "tanh" else "he_normal"
        self._params = {}
        for name, shape in parameter_shapes(self.spec_).items():
            if name.endswith(".W"):
                self._params[name] = initialize(init, shape[0], shape[1], self._rng, self.dtype)
            else:
                self._params[name] = np.zeros(shape, self.dtype)
        self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        self._ws = Workspace(self.dtype)
        return self

    def named_parameters(self) -> dict[str, np.ndarray]:
        """``{dotted name: live parameter array}``; writing into the arrays changes the model."""
        self._check_built()
        return dict(self._params)

    def _check_built(self):
        if self._params is None:
            raise NotFittedError(f"This {type(self).__name__} has no parameters yet; call fit(X), "
                                 "build(n_features) or VAE.load(path) first")

    # ------------------------------------------------------------------ input checks
    def _check_X(self, X, name="X"):
        self._check_built()
        X = check_array(X, name, dtype=self.dtype, n_features=self.n_features_in_)
        if self.likelihood == "bernoulli" and not np.all((X == 0) | (X == 1)):
            raise ValueError(
                f"likelihood='bernoulli' needs binary data, but {name} has values other than 0 and 1 "
                f"(range [{X.min():g}, {X.max():g}]); binarise it with probgen.datasets.binarize "
                "or use likelihood='gaussian'")
        return X

    def _check_eps(self, eps, N):
        L, M = self.n_samples, self.latent_dim
        eps = check_array(eps, "eps", ndim=(2, 3), dtype=self.dtype)
        if eps.ndim == 2:
            if L != 1:
                raise ValueError(f"eps must have shape (n_samples, N, latent_dim) = ({L}, {N}, {M}), "
                                 f"got {eps.shape}")
            eps = eps[None]
        if eps.shape != (L, N, M):
            raise ValueError(f"eps must have shape (n_samples, N, latent_dim) = ({L}, {N}, {M}), got {eps.shape}")
        return eps

    # ------------------------------------------------------------------ the seam
    def loss_and_grads(self, X, *, rng=None, eps=None):
        """Mean negative ELBO of ``X`` and its gradients (fresh arrays).

        Parameters
        ----------
        X : array_like of shape (N, D)
        rng : None, int or numpy.random.Generator
            Draws ``eps`` when it is not given (default: the model's generator).
        eps : array_like of shape (n_samples, N, latent_dim) or None
            The reparameterisation noise ``[eq:vae-reparam]``; shape (N, latent_dim)
            is accepted when ``n_samples == 1``.  Given, the loss is a deterministic
            function of the parameters.

        Returns
        -------
        loss : float
            :math:`-\\frac1N\\sum_n \\hat{\\mathcal L}(x_n)` with the model's
            estimator ``[eq:vae-lb]`` / ``[eq:vae-la]``.
        grads : dict {name: ndarray}
            Keys of :meth:`named_parameters`.
        """
        X = self._check_X(X)
        if eps is None:
            gen = self._rng if rng is None else check_rng(rng)
            eps = gen.standard_normal((self.n_samples, X.shape[0], self.latent_dim), dtype=self.dtype)
        else:
            eps = self._check_eps(eps, X.shape[0])
        loss, _ = loss_and_grads(self._params, self.spec_, X, eps, self._ws, self._grads)
        return loss, {k: g.copy() for k, g in self._grads.items()}

    def _batch_step(self, Xb, rng, beta):
        eps = rng.standard_normal((self.n_samples, Xb.shape[0], self.latent_dim), dtype=self.dtype)
        _, elbo = loss_and_grads(self._params, self.spec_, Xb, eps, self._ws, self._grads, beta)
        return elbo, self._grads

    def _evaluate(self, X, rng):
        return float(np.mean(elbo_estimates(self._params, self.spec_, X, rng), dtype=np.float64))

    # ------------------------------------------------------------------ training
    def fit(self, X, epochs=10, batch_size=100, lr=1e-3, *, validation=None, progress=True, checkpoint=None,
            resume=None, kl_warmup=0, lr_decay=1.0, weight_decay=0.0, keep_best=False, callback=None,
            lr_schedule="exponential", lr_warmup=0):
        """Train by minibatch Adam on the negative ELBO; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (N, D)
            Binary for a Bernoulli decoder.
        epochs : int
            Total number of epochs (a resumed run continues up to this number).
        batch_size : int
        lr : float
            Adam's learning rate (torch defaults otherwise).
        validation : array_like of shape (N_v, D) or None
            Scored after every epoch (``history_["validation_elbo"]``).
        progress : bool
            Progress bar (only on a TTY).
        checkpoint : path or None
            Written atomically after every epoch: parameters, Adam moments and step,
            the generator's state, history.
        resume : path or None
            A checkpoint of a run with the same architecture and fit settings;
            training continues from it (use the same path for ``checkpoint``).
            A truncated or corrupt file is refused with ``ValueError``.
        kl_warmup : float
            Epochs of linear KL annealing: the KL part is weighted by
            :math:`\\beta_t = \\min(1, t / T)` at step :math:`t`, with :math:`T` steps
            in ``kl_warmup`` epochs (0: off).  History scores stay true ELBOs.
        lr_decay : float in (0, 1]
            Learning rate of epoch :math:`e` (from 0) is ``lr * lr_decay**e``.
        weight_decay : float
            L2 penalty added to every gradient by Adam (torch's coupled form).
        lr_schedule : {"exponential", "cosine"}
            ``"exponential"`` follows ``lr_decay``; ``"cosine"`` lowers the rate step by step from
            ``lr`` to zero over the ``epochs`` of the run ``[eq:lr-schedule]`` (``lr_decay`` must stay 1;
            a resumed run must keep ``epochs``).
        lr_warmup : int
            Steps of linear learning-rate warm-up, multiplying either schedule (0: none).
        keep_best : bool
            At the end, restore the parameters of the epoch with the best validation ELBO.
        callback : callable or None
            ``callback(epoch, model)`` after each epoch (and its checkpoint); a true
            return value stops training.

        Notes
        -----
        If the model already has parameters (of the same width) training continues
        from them with a fresh optimiser; otherwise :meth:`build` runs first.
        """
        return _training.fit_flat(self, X, validation=validation, desc="VAE", epochs=epochs, batch_size=batch_size,
                                  lr=lr, kl_warmup=kl_warmup, lr_decay=lr_decay, weight_decay=weight_decay, lr_schedule=lr_schedule,
                                  lr_warmup=lr_warmup, progress=progress, checkpoint=checkpoint, resume=resume,
                                  keep_best=keep_best, callback=callback)

    # ------------------------------------------------------------------ evaluation
    def elbo(self, X, rng=None):
        """Per-example ELBO estimate (nats) with the model's estimator and ``n_samples``.

        Returns
        -------
        ndarray of shape (N,), the model's dtype
        """
        X = self._check_X(X)
        return elbo_estimates(self._params, self.spec_, X, check_rng(rng)).astype(self.dtype)

    def log_likelihood(self, X, k=5000, rng=None, batch_size=4096):
        """Importance-sampled estimate of :math:`\\log p(x)` per example (nats) ``[eq:iwae]``.

        :math:`\\log \\frac1k \\sum_{i=1}^k p(x, z_i)/q(z_i|x)`, :math:`z_i \\sim q(z|x)`:
        a lower bound in expectation that tightens as ``k`` grows (the IWAE bound),
        computed with a streaming log-sum-exp in float64.

        Parameters
        ----------
        X : array_like of shape (N, D)
        k : int
            Importance samples per example.
        rng : None, int or numpy.random.Generator
        batch_size : int
            (example, sample) pairs decoded at once: bounds memory to
            O(batch_size * max width) whatever ``k`` and N.

        Returns
        -------
        ndarray of shape (N,), the model's dtype
        """
        X = self._check_X(X)
        k = check_positive_int(k, "k")
        batch_size = check_positive_int(batch_size, "batch_size")
        out = importance_log_likelihood(self._params, self.spec_, X, k, check_rng(rng), batch_size)
        return out.astype(self.dtype)

    def score_samples(self, X, k=5000, rng=None):
        """Alias of :meth:`log_likelihood` (an estimate, not an exact density)."""
        return self.log_likelihood(X, k=k, rng=rng)

    # ------------------------------------------------------------------ encoder / decoder
    def encode(self, X):
        """Posterior parameters ``(mu, log_var)``, each (N, M) ``[eq:vae-encoder]``."""
        X = self._check_X(X)
        mu, log_var, _ = encode(self._params, self.spec_, X, Workspace(self.dtype))
        return np.ascontiguousarray(mu), np.ascontiguousarray(log_var)

    def decode(self, Z):
        """Decoder mean for codes ``Z`` (N, M): probabilities (Bernoulli) or means (Gaussian), (N, D)."""
        self._check_built()
        Z = check_array(Z, "Z", dtype=self.dtype, n_features=self.latent_dim)
        out, _ = decode(self._params, self.spec_, Z, Workspace(self.dtype))
        return sigmoid(out) if self.likelihood == "bernoulli" else out

    def reconstruct(self, X):
        """``decode(mu(X))``: the decoder mean at the posterior mean, (N, D)."""
        return self.decode(self.encode(X)[0])

    def sample(self, n, rng=None, *, return_mean=False):
        """Draw ``n`` examples: :math:`z \\sim N(0, I)`, then :math:`x \\sim p(x|z)` (N, D).

        With ``return_mean=True`` return the decoder means instead of draws (the
        usual picture of a Bernoulli VAE's samples).
        """
        self._check_built()
        n = check_positive_int(n, "n")
        rng = check_rng(rng)
        mean = self.decode(rng.standard_normal((n, self.latent_dim), dtype=self.dtype))
        if return_mean:
            return mean
        if self.likelihood == "bernoulli":
            return (rng.random(mean.shape, dtype=self.dtype) < mean).astype(self.dtype)
        std = np.exp(0.5 * decoder_log_var(self._params, self.spec_, self.dtype))
        return mean + std * rng.standard_normal(mean.shape, dtype=self.dtype)

    # ------------------------------------------------------------------ persistence

    @classmethod
    def _from_config(cls, cfg):
        D = cfg.pop("n_features")
        return cls(**{**cfg, "hidden": tuple(cfg["hidden"])}).build(D)

