"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov, 2016, the two-layer model).

Generative model :math:`p(z_2)\\,p(z_1|z_2)\\,p(x|z_1)`, inference model :math:`q(z_1|x)\\,q(z_2|z_1)`
(``inference="bottom_up"``, the default) or :math:`q(z_2|x)\\,q(z_1|z_2, x)` (``"top_down"``).
The maths lives in :mod:`probgen.models._hvae_backward` and :mod:`probgen.models._hvae_topdown`
(forward and backward passes by the chain rule) and is derived in ``docs/hvae.md``; this module is
the thin estimator, with the same API as
:class:`probgen.models.VAE`: checks, initialisation, the seam (``named_parameters`` /
``loss_and_grads``), training (the shared loop of :mod:`probgen.models._training`), evaluation and
persistence.
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
from ..nn.functional import sigmoid
from ..nn.init import initialize
from . import _training
from ._hvae_backward import (
    HVAESpec,
    draw_noise,
    elbo_estimates,
    gaussian_net,
    importance_log_likelihood,
    logits_net,
    loss_and_grads,
    parameter_shapes,
)
from ._hvae_topdown import posterior_z1, posterior_z2
from ._persist import Persistent
from ._vae_backward import Workspace
from .vae import _check_hidden

__all__ = ["HierarchicalVAE"]


def _check_latent_dims(latent_dims) -> tuple:
    if not isinstance(latent_dims, (tuple, list)) or len(latent_dims) != 2:
        raise ValueError(f"latent_dims must be a pair (z1, z2) of positive ints, got {latent_dims!r}")
    return tuple(check_positive_int(z, f"latent_dims[{i}]") for i, z in enumerate(latent_dims))


def _check_hidden_pair(hidden) -> tuple:
    """``((widths of x<->z1 nets), (widths of z1<->z2 nets))``; an int or a flat tuple means the same for both."""
    if isinstance(hidden, (tuple, list)) and any(isinstance(h, (tuple, list)) for h in hidden):
        if len(hidden) != 2:
            raise ValueError(f"hidden must be a pair (widths of layer 1, widths of layer 2) or one tuple of "
                             f"widths for both, got {hidden!r}")
        return tuple(_check_hidden(h) for h in hidden)
    h = _check_hidden(hidden)
    return (h, h)


class HierarchicalVAE(Persistent):
    """Variational autoencoder with two stochastic layers and a Bernoulli decoder.

    Parameters
    ----------
    latent_dims : (int, int)
        :math:`(Z_1, Z_2)`, the sizes of :math:`z_1` (next to the data) and :math:`z_2` (the top,
        with prior :math:`N(0, I)`) ``[eq:hvae-model]``.
    hidden : pair of tuples of int, or one tuple of int
        ``(H1, H2)``: hidden widths of :math:`q(z_1|x)` (``p(x|z_1)`` mirrors them) and of
        :math:`q(z_2|z_1)` (``p(z_1|z_2)`` mirrors them).  One tuple (or an int) uses the same
        widths for both.  The IWAE paper's model is ``((200, 200), (100, 100))`` with
        ``latent_dims=(100, 50)``.  Top-down: ``H1`` are the widths of the feature network
        :math:`d = f(x)`, and ``H2`` those of both :math:`q(z_2|x)` (on :math:`d`) and
        :math:`q(z_1|z_2, x)` (on :math:`[d, z_2]`) ``[eq:hvae-td-inference]``.
    estimator : {"analytic", "mc"}
        ``"analytic"``: Monte-Carlo :math:`\\log p(x|z_1) + \\log p(z_1|z_2) - \\log q(z_1|x)` plus the
        closed-form :math:`-KL(q(z_2|z_1)\\|p(z_2))` ``[eq:hvae-estimator]``; ``"mc"``: the
        single-sample log-weight ``[eq:hvae-log-w]``.  Top-down, ``"analytic"`` takes both layer
        terms as closed-form KLs ``[eq:hvae-td-estimator]`` and ``"mc"`` is ``[eq:hvae-td-log-w]``.
    n_samples : int
        :math:`L`, samples of :math:`(z_1, z_2)` per example and step.
    activation : {"tanh", "relu"}
    rng : None, int or numpy.random.Generator
        Feeds the initial weights, then the shuffling and the noise of ``fit``.
    dtype : float32 or float64
        Precision of parameters and every output.
    inference : {"bottom_up", "top_down"}
        The inference model: :math:`q(z_1|x)\\,q(z_2|z_1)` ``[eq:hvae-inference]`` (the IWAE paper's;
        parameter prefixes ``q_z1``, ``q_z2``, ``p_z1``, ``p_x``) or :math:`q(z_2|x)\\,q(z_1|z_2, x)`,
        sampled in the generative order ``[eq:hvae-td-inference]`` (prefixes ``q_d``, ``q_z2``,
        ``q_z1``, ``p_z1``, ``p_x``).  Noise keeps its meaning in both: ``eps1`` for :math:`z_1`,
        ``eps2`` for :math:`z_2`.

    Attributes
    ----------
    n_features_in_ : int
    history_ : dict of lists
        As :class:`probgen.models.VAE`: ``epoch``, ``train_elbo``, ``validation_elbo``, ``lr``,
        ``kl_weight``, ``best_epoch``.

    Notes
    -----
    :math:`\\mathcal L(x) = E_q[\\log p(x|z_1)] - E_{q}[\\log q(z_1|x) - \\log p(z_1|z_2)]
    - E_{q(z_1|x)}[KL(q(z_2|z_1)\\|p(z_2))]` ``[eq:hvae-elbo]``; top-down
    :math:`\\mathcal L(x) = E_q[\\log p(x|z_1)] - KL(q(z_2|x)\\|p(z_2))
    - E_{q(z_2|x)}[KL(q(z_1|z_2,x)\\|p(z_1|z_2))]` ``[eq:hvae-td-elbo]``.  Values are in nats.
    """

    _score_name = "elbo"
    _higher_is_better = True

    def __init__(self, latent_dims=(100, 50), hidden=((200, 200), (100, 100)), estimator="analytic", n_samples=1,
                 activation="tanh", rng=None, dtype=np.float64, inference="bottom_up"):
        self.latent_dims = _check_latent_dims(latent_dims)
        self.hidden = _check_hidden_pair(hidden)
        self.estimator = check_option(estimator, "estimator", ("analytic", "mc"))
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.activation = check_option(activation, "activation", ("tanh", "relu"))
        check_rng(rng)  # type check only; the generator is made in build()
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.inference = check_option(inference, "inference", ("bottom_up", "top_down"))
        self.n_features_in_ = None
        self.history_ = None
        self._params = None

    # ------------------------------------------------------------------ structure
    def _config(self) -> dict:
        """The architecture; ``inference`` only when not the default, so a bottom-up model's configuration
        (hence its saved files and checkpoints) is what it was before top-down inference existed."""
        cfg = {"latent_dims": list(self.latent_dims), "hidden": [list(h) for h in self.hidden],
               "estimator": self.estimator, "n_samples": self.n_samples, "activation": self.activation,
               "dtype": self.dtype.name, "n_features": self.n_features_in_}
        if self.inference != "bottom_up":
            cfg["inference"] = self.inference
        return cfg

    def build(self, n_features):
        """Create freshly initialised parameters for inputs of width ``n_features``; returns ``self``.

        Weights: Glorot uniform (tanh) or He normal (relu) from the model's ``rng``
        ``[eq:glorot]`` ``[eq:he]``; biases start at 0.
        """
        D = check_positive_int(n_features, "n_features")
        self._rng = check_rng(self.rng)
        self.n_features_in_ = D
        self.spec_ = HVAESpec(D, self.latent_dims, self.hidden, self.activation, self.estimator, self.n_samples,
                              self.inference)
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
        """``{dotted name: live parameter array}`` (prefixes ``q_z1``, ``q_z2``, ``p_z1``, ``p_x``; top-down
        also ``q_d``)."""
        self._check_built()
        return dict(self._params)

    def _check_built(self):
        if self._params is None:
            raise NotFittedError(f"This {type(self).__name__} has no parameters yet; call fit(X), "
                                 "build(n_features) or HierarchicalVAE.load(path) first")

    # ------------------------------------------------------------------ input checks
    def _check_X(self, X, name="X"):
        self._check_built()
        X = check_array(X, name, dtype=self.dtype, n_features=self.n_features_in_)
        if not np.all((X == 0) | (X == 1)):
            raise ValueError(
                f"HierarchicalVAE has a Bernoulli decoder and needs binary data, but {name} has values other "
                f"than 0 and 1 (range [{X.min():g}, {X.max():g}]); binarise it with probgen.datasets.binarize")
        return X

    def _check_eps(self, eps, N):
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise TypeError(f"eps must be a pair (eps1, eps2), got {type(eps).__name__}")
        L, out = self.n_samples, []
        for i, (e, Z) in enumerate(zip(eps, self.latent_dims)):
            e = check_array(e, f"eps[{i}]", ndim=(2, 3), dtype=self.dtype)
            if e.ndim == 2 and L == 1:
                e = e[None]
            if e.shape != (L, N, Z):
                raise ValueError(f"eps[{i}] must have shape (N, z{i + 1}) = ({N}, {Z}) or (n_samples, N, z{i + 1}) "
                                 f"= ({L}, {N}, {Z}), got {np.shape(eps[i])}")
            out.append(e)
        return tuple(out)

    # ------------------------------------------------------------------ the seam
    def loss_and_grads(self, X, *, rng=None, eps=None):
        """Mean negative ELBO estimate of ``X`` and its exact gradients for the noise (fresh arrays).

        Parameters
        ----------
        X : array_like of shape (N, D), binary
        rng : None, int or numpy.random.Generator
            Draws ``eps`` when it is not given (default: the model's generator).
        eps : (eps1, eps2) or None
            Standard normal noise of ``z1`` (shape (N, Z1)) and ``z2`` (N, Z2) ``[eq:hvae-reparam]``
            ``[eq:hvae-td-reparam]``, or (n_samples, N, Z) each.  Given, the loss is a deterministic
            function of the parameters.

        Returns
        -------
        loss : float
            :math:`J_1` ``[eq:hvae-loss]`` (top-down ``[eq:hvae-td-loss]``), the mean over examples
            and samples of the negative estimate ``[eq:hvae-estimator]`` (``[eq:hvae-td-estimator]``).
        grads : dict {name: ndarray}
            Keys of :meth:`named_parameters`.
        """
        X = self._check_X(X)
        if eps is None:
            gen = self._rng if rng is None else check_rng(rng)
            eps = draw_noise(gen, self.spec_, self.n_samples, X.shape[0], self.dtype)
        else:
            eps = self._check_eps(eps, X.shape[0])
        loss, _ = loss_and_grads(self._params, self.spec_, X, *eps, self._ws, self._grads)
        return loss, {k: g.copy() for k, g in self._grads.items()}

    def _batch_step(self, Xb, rng, beta):
        eps = draw_noise(rng, self.spec_, self.n_samples, Xb.shape[0], self.dtype)
        _, elbo = loss_and_grads(self._params, self.spec_, Xb, *eps, self._ws, self._grads, beta)
        return elbo, self._grads

    def _evaluate(self, X, rng):
        return float(np.mean(elbo_estimates(self._params, self.spec_, X, rng), dtype=np.float64))

    # ------------------------------------------------------------------ training
    def fit(self, X, epochs=10, batch_size=100, lr=1e-3, *, validation=None, progress=True, checkpoint=None,
            resume=None, kl_warmup=0, lr_decay=1.0, weight_decay=0.0, keep_best=False, callback=None,
            lr_schedule="exponential", lr_warmup=0):
        """Train by minibatch Adam on the negative ELBO; returns ``self``.

        Arguments as :meth:`probgen.models.VAE.fit`.  With ``kl_warmup`` the weight
        :math:`\\beta_t` multiplies both KL-like terms of ``[eq:hvae-loss]`` (top-down, both KLs of
        ``[eq:hvae-td-loss]``); history scores stay
        true ELBO estimates.
        """
        return _training.fit_flat(self, X, validation=validation, desc="HierarchicalVAE", epochs=epochs, batch_size=batch_size,
                                  lr=lr, kl_warmup=kl_warmup, lr_decay=lr_decay, weight_decay=weight_decay, lr_schedule=lr_schedule,
                                  lr_warmup=lr_warmup, progress=progress, checkpoint=checkpoint, resume=resume,
                                  keep_best=keep_best, callback=callback)

    # ------------------------------------------------------------------ evaluation
    def elbo(self, X, rng=None):
        """Per-example ELBO estimate (nats) with the model's estimator and ``n_samples``, shape (N,)."""
        X = self._check_X(X)
        return elbo_estimates(self._params, self.spec_, X, check_rng(rng)).astype(self.dtype)

    def log_likelihood(self, X, k=5000, rng=None, batch_size=4096):
        """Importance-sampled estimate of :math:`\\log p(x)` per example (nats) ``[eq:hvae-iwae]``.

        :math:`\\log \\frac1k \\sum_i p(x, z_1^i, z_2^i) / q(z_1^i, z_2^i|x)` with
        :math:`(z_1^i, z_2^i) \\sim q(z_1|x) q(z_2|z_1)` (top-down :math:`q(z_2|x) q(z_1|z_2, x)`,
        ``[eq:hvae-td-log-w]``): a lower bound in expectation, non-decreasing
        in ``k``; streamed log-sum-exp in float64, at most ``batch_size`` (example, sample) pairs
        decoded at once.

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
        """Posterior parameters ``((mu1, log_var1), (mu2, log_var2))`` on the mean path (no noise).

        Bottom-up ``[eq:hvae-inference]``: ``(mu1, log_var1)`` (N, Z1) are those of :math:`q(z_1|x)`;
        ``(mu2, log_var2)`` (N, Z2) those of :math:`q(z_2|z_1)` at :math:`z_1 = \\mu_1`.  Top-down
        ``[eq:hvae-td-inference]``: ``(mu2, log_var2)`` are those of :math:`q(z_2|x)`, and
        ``(mu1, log_var1)`` those of :math:`q(z_1|z_2, x)` at :math:`z_2 = \\mu_2`.
        """
        X = self._check_X(X)
        ws = Workspace(self.dtype)
        if self.inference == "top_down":
            mu2, lv2, hs_d, _, _ = posterior_z2(self._params, self.spec_, X, ws)
            mu1, lv1, _, _ = posterior_z1(self._params, self.spec_, hs_d[-1], mu2[None], ws)
            return (mu1.copy(), lv1.copy()), (mu2.copy(), lv2.copy())
        mu1, lv1, _, _ = gaussian_net(self._params, self.spec_, "q_z1", X, ws)
        mu1, lv1 = np.ascontiguousarray(mu1), np.ascontiguousarray(lv1)
        mu2, lv2, _, _ = gaussian_net(self._params, self.spec_, "q_z2", mu1, ws)
        return (mu1, lv1), (np.ascontiguousarray(mu2), np.ascontiguousarray(lv2))

    def unit_activity(self, X, n_samples=10, rng=None):
        """Activity :math:`A_u = \\mathrm{Var}_x(E_q[u|x])` of every latent unit ``[eq:hvae-active-units]``.

        A unit with :math:`A_u < 10^{-2}` is *inactive* (Burda et al.): its posterior mean ignores
        the input, the signature of posterior collapse.  :math:`E_q[z_1|x] = \\mu_1(x)` exactly;
        :math:`E_q[z_2|x] = E_{q(z_1|x)}[\\mu_2(z_1)]` is averaged over ``n_samples`` draws of ``z1``.
        Top-down the roles swap: :math:`E_q[z_2|x] = \\mu_2(x)` exactly and
        :math:`E_q[z_1|x] = E_{q(z_2|x)}[\\mu_1(z_2, x)]` is averaged over ``n_samples`` draws of ``z2``.

        Returns
        -------
        a1 : ndarray of shape (Z1,), float64
        a2 : ndarray of shape (Z2,), float64
        """
        X = self._check_X(X)
        S = check_positive_int(n_samples, "n_samples")
        rng = check_rng(rng)
        ws = Workspace(self.dtype)
        if self.inference == "top_down":
            mu2, lv2, hs_d, _, _ = posterior_z2(self._params, self.spec_, X, ws)
            mu2, s2 = mu2.astype(np.float64), np.exp(0.5 * lv2.astype(np.float64))
            mean1 = np.zeros((X.shape[0], self.latent_dims[0]))
            for _ in range(S):
                z2 = (mu2 + s2 * rng.standard_normal(mu2.shape)).astype(self.dtype)  # [eq:hvae-td-reparam]
                mean1 += posterior_z1(self._params, self.spec_, hs_d[-1], z2[None], ws)[0] / S
            return mean1.var(axis=0), mu2.var(axis=0)
        mu1, lv1, _, _ = gaussian_net(self._params, self.spec_, "q_z1", X, ws)
        mu1, s1 = mu1.astype(np.float64), np.exp(0.5 * lv1.astype(np.float64))
        mean2 = np.zeros((X.shape[0], self.latent_dims[1]))
        for _ in range(S):
            z1 = (mu1 + s1 * rng.standard_normal(mu1.shape)).astype(self.dtype)  # [eq:hvae-reparam]
            mean2 += gaussian_net(self._params, self.spec_, "q_z2", z1, ws)[0] / S
        return mu1.var(axis=0), mean2.var(axis=0)

    def decode(self, Z1):
        """Bernoulli means :math:`p(x_d = 1|z_1)` for codes ``Z1`` (N, Z1), shape (N, D)."""
        self._check_built()
        Z1 = check_array(Z1, "Z1", dtype=self.dtype, n_features=self.latent_dims[0])
        return sigmoid(logits_net(self._params, self.spec_, Z1, Workspace(self.dtype))[0])

    def reconstruct(self, X):
        """``decode(mu1)`` with ``mu1`` from :meth:`encode`: the decoder mean at the posterior mean path, (N, D)."""
        return self.decode(self.encode(X)[0][0])

    def sample(self, n, rng=None, *, return_mean=False):
        """Ancestral samples: :math:`z_2 \\sim N(0, I)`, :math:`z_1 \\sim p(z_1|z_2)`, :math:`x \\sim p(x|z_1)` (n, D).

        With ``return_mean=True`` return the Bernoulli means of :math:`p(x|z_1)` at the sampled
        :math:`z_1` instead of binary draws.
        """
        self._check_built()
        n = check_positive_int(n, "n")
        rng = check_rng(rng)
        Z1, Z2 = self.latent_dims
        z2 = rng.standard_normal((n, Z2), dtype=self.dtype)
        mup, lvp, _, _ = gaussian_net(self._params, self.spec_, "p_z1", z2, Workspace(self.dtype))
        z1 = mup + np.exp(0.5 * lvp) * rng.standard_normal((n, Z1), dtype=self.dtype)  # [eq:hvae-model]
        mean = self.decode(z1)
        if return_mean:
            return mean
        return (rng.random(mean.shape, dtype=self.dtype) < mean).astype(self.dtype)

    # ------------------------------------------------------------------ persistence

    @classmethod
    def _from_config(cls, cfg):
        D = cfg.pop("n_features")
        if not isinstance(cfg.get("hidden"), list) or not all(isinstance(h, list) for h in cfg["hidden"]):
            raise ValueError(f"hidden must be a list of two lists, got {cfg.get('hidden')!r}")
        return cls(**{**cfg, "latent_dims": tuple(cfg["latent_dims"]),
                      "hidden": tuple(tuple(h) for h in cfg["hidden"])}).build(D)


