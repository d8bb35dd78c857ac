"""Generative adversarial network (Goodfellow et al., 2014) on :mod:`probgen.nn` layers.

A generator :math:`G` maps noise :math:`z \\sim N(0, I)` to data space, a
discriminator :math:`D` maps a point to the logit of "this is real"; the two play
the minimax game ``[eq:gan-minimax]``.  The losses are module-level functions of
the discriminator's logits (stable softplus forms); the model class holds the two
MLPs, the seam (``named_parameters`` / ``loss_and_grads``) and the alternating
training loop.  Derivations: ``docs/gan.md``.
"""
from __future__ import annotations

import numpy as np

from .._progress import progress_bar
from .._validation import (
    NotFittedError,
    check_array,
    check_dtype,
    check_option,
    check_positive_float,
    check_positive_int,
    check_rng,
)
from ..nn.functional import sigmoid, softplus
from ..nn.layers import Linear, mlp
from ..nn.optim import Adam
from ._persist import Persistent
from .vae import _check_hidden

__all__ = ["GAN", "discriminator_loss", "generator_loss"]

GENERATOR_LOSSES = ("non_saturating", "minimax")


# --------------------------------------------------------------------------- the losses
def discriminator_loss(real_logits, fake_logits):
    """D's loss from its logits on real and generated points, and its gradient.

    Parameters
    ----------
    real_logits : ndarray of shape (N,)
        :math:`a_n = \\operatorname{logit} D(x_n)`.
    fake_logits : ndarray of shape (M,)
        :math:`b_m = \\operatorname{logit} D(G(z_m))`, same dtype.

    Returns
    -------
    loss : float
        :math:`\\frac1N\\sum_n \\operatorname{softplus}(-a_n) + \\frac1M\\sum_m
        \\operatorname{softplus}(b_m)`, i.e. :math:`-[\\overline{\\log D(x)} +
        \\overline{\\log(1 - D(G(z)))}]` ``[eq:gan-d-loss]``.
    d_real : ndarray of shape (N,)
        :math:`\\partial/\\partial a_n = -\\sigma(-a_n)/N`.
    d_fake : ndarray of shape (M,)
        :math:`\\partial/\\partial b_m = \\sigma(b_m)/M`.
    """
    N, M = real_logits.shape[0], fake_logits.shape[0]
    loss = (np.mean(softplus(-real_logits), dtype=np.float64)
            + np.mean(softplus(fake_logits), dtype=np.float64))  # [eq:gan-d-loss]
    d_real = sigmoid(-real_logits)
    d_real /= -N
    d_fake = sigmoid(fake_logits)
    d_fake /= M
    return float(loss), d_real, d_fake


def generator_loss(fake_logits, kind="non_saturating"):
    """G's loss from D's logits :math:`b_m` at :math:`G(z_m)`, and its gradient.

    Parameters
    ----------
    fake_logits : ndarray of shape (M,)
    kind : {"non_saturating", "minimax"}

    Returns
    -------
    loss : float
        ``"minimax"``: :math:`\\frac1M\\sum_m \\log(1 - D(G(z_m))) = -\\frac1M\\sum_m
        \\operatorname{softplus}(b_m)` ``[eq:gan-g-minimax]``;
        ``"non_saturating"``: :math:`-\\frac1M\\sum_m \\log D(G(z_m)) = \\frac1M\\sum_m
        \\operatorname{softplus}(-b_m)` ``[eq:gan-g-nonsat]``.
    d_fake : ndarray of shape (M,)
        :math:`-\\sigma(b_m)/M` (minimax, vanishes as :math:`D(G(z)) \\to 0`) or
        :math:`-\\sigma(-b_m)/M` (non-saturating, tends to :math:`-1/M`).
    """
    check_option(kind, "kind", GENERATOR_LOSSES)
    M = fake_logits.shape[0]
    if kind == "minimax":
        loss = -np.mean(softplus(fake_logits), dtype=np.float64)  # [eq:gan-g-minimax]
        d_fake = sigmoid(fake_logits)
    else:
        loss = np.mean(softplus(-fake_logits), dtype=np.float64)  # [eq:gan-g-nonsat]
        d_fake = sigmoid(-fake_logits)
    d_fake /= -M
    return float(loss), d_fake


def _input_gradient(net, dy):
    """``net``'s input gradient for the upstream ``dy`` after a forward pass, without its parameter grads.

    G's step needs only :math:`\\partial J_G / \\partial \\tilde x` from D ``[eq:gan-backward]``;
    D's own parameter gradients of that pass would be thrown away, so each :class:`Linear` layer
    does only its :math:`dy\\,W^\\top` product ``[eq:linear-backward]``, skipping the weight-gradient
    GEMM and the bias sum (measured ~6% of a 784-256-256 GAN step).  Other layers (the
    parameter-free activations of :func:`~probgen.nn.layers.mlp`) run their ordinary backward.
    """
    for layer in reversed(list(net.layers.values())):
        if isinstance(layer, Linear):
            dy = dy @ layer.params["W"].T  # [eq:linear-backward], the dx half
        else:
            dy = layer.backward(dy)
    return dy


# --------------------------------------------------------------------------- the model
class GAN(Persistent):
    """MLP generator and discriminator trained by alternating Adam steps ``[eq:gan-minimax]``.

    Parameters
    ----------
    latent_dim : int
        :math:`L`, the dimension of the noise :math:`z \\sim N(0, I_L)`.
    generator_hidden, discriminator_hidden : tuple of int
        Hidden widths of :math:`G` (output linear, width :math:`D`) and of the
        discriminator (output one logit).  ``()`` gives an affine map.
    generator_loss : {"non_saturating", "minimax"}
        What G minimises: :math:`-\\log D(G(z))` ``[eq:gan-g-nonsat]`` or
        :math:`\\log(1 - D(G(z)))` ``[eq:gan-g-minimax]``.
    k : int
        Discriminator steps per generator step.
    activation : {"relu", "leaky_relu", "tanh"}
        Hidden non-linearity of both networks.
    rng : None, int or numpy.random.Generator
        Initial weights, then the shuffling and the noise of ``fit``.
    dtype : float32 or float64

    Attributes
    ----------
    n_features_in_ : int
    generator, discriminator : probgen.nn.layers.Sequential
    history_ : dict of lists
        Per epoch: ``epoch``, ``d_loss`` ``[eq:gan-d-loss]`` and ``g_loss`` (means over the
        epoch's steps; ``None`` for an epoch without a G step), ``d_real`` (mean
        :math:`D(x)`), ``d_fake`` (mean :math:`D(G(z))`), both seen by D's steps.

    Notes
    -----
    For fixed G the best discriminator is :math:`D^* = p_{data}/(p_{data}+p_g)`
    ``[eq:gan-optimal-d]``, and then the game's value is :math:`2\\,JSD - \\log 4`
    ``[eq:gan-jsd]``.  There is no likelihood: a GAN only samples.
    """

    def __init__(self, latent_dim=2, generator_hidden=(64, 64), discriminator_hidden=(64, 64),
                 generator_loss="non_saturating", k=1, activation="relu", rng=None, dtype=np.float64):
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.generator_hidden = _check_hidden(generator_hidden)
        self.discriminator_hidden = _check_hidden(discriminator_hidden)
        self.generator_loss = check_option(generator_loss, "generator_loss", GENERATOR_LOSSES)
        self.k = check_positive_int(k, "k")
        self.activation = check_option(activation, "activation", ("relu", "leaky_relu", "tanh"))
        check_rng(rng)
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.n_features_in_ = None
        self.history_ = None
        self.generator = self.discriminator = None

    def _config(self) -> dict:
        return {"latent_dim": self.latent_dim, "generator_hidden": list(self.generator_hidden),
                "discriminator_hidden": list(self.discriminator_hidden), "generator_loss": self.generator_loss,
                "k": self.k, "activation": self.activation, "dtype": self.dtype.name,
                "n_features": self.n_features_in_}

    def build(self, n_features):
        """Create freshly initialised G and D for data of width ``n_features``; returns ``self``."""
        D = check_positive_int(n_features, "n_features")
        self._rng = check_rng(self.rng)
        self.n_features_in_ = D
        self.generator = mlp((self.latent_dim, *self.generator_hidden, D), self.activation, rng=self._rng,
                             dtype=self.dtype)
        self.discriminator = mlp((D, *self.discriminator_hidden, 1), self.activation, rng=self._rng,
                                 dtype=self.dtype)
        return self

    def _check_built(self):
        if self.generator is None:
            raise NotFittedError("This GAN has no parameters yet; call fit(X), build(n_features) or "
                                 "GAN.load(path) first")

    def named_parameters(self) -> dict[str, np.ndarray]:
        """``{"generator.0.W": ..., "discriminator.2.b": ...}``: live arrays of both networks."""
        self._check_built()
        return {**self.generator.named_parameters("generator"),
                **self.discriminator.named_parameters("discriminator")}

    def _check_X(self, X, name="X"):
        self._check_built()
        return check_array(X, name, dtype=self.dtype, n_features=self.n_features_in_)

    def _check_z(self, z, n, rng):
        if z is None:
            gen = self._rng if rng is None else check_rng(rng)
            return gen.standard_normal((n, self.latent_dim), dtype=self.dtype)
        return check_array(z, "z", dtype=self.dtype, n_features=self.latent_dim)

    # ------------------------------------------------------------------ the two passes
    def _discriminator_pass(self, X, z):
        """D's loss and live grads on real ``X`` (N, D) and fakes ``G(z)``; one batch through D."""
        N = X.shape[0]
        x_fake = self.generator.forward(z)  # G is not differentiated in D's step
        self.discriminator._prepare_backward()  # the backward below writes every gradient
        logits = self.discriminator.forward(np.concatenate([X, x_fake]))[:, 0]
        loss, d_real, d_fake = discriminator_loss(logits[:N], logits[N:])  # [eq:gan-d-loss]
        self.discriminator.backward(np.concatenate([d_real, d_fake])[:, None], need_dx=False)
        stats = (float(np.mean(sigmoid(logits[:N]), dtype=np.float64)),
                 float(np.mean(sigmoid(logits[N:]), dtype=np.float64)))
        return loss, self.discriminator.named_grads("discriminator"), stats

    def _generator_pass(self, z):
        """G's loss and live grads: back through D to the fakes, then through G ``[eq:gan-backward]``."""
        self.generator._prepare_backward()  # the backward below writes every gradient
        x_fake = self.generator.forward(z)
        logits = self.discriminator.forward(x_fake)
        loss, d_logits = generator_loss(logits[:, 0], self.generator_loss)
        d_x_fake = _input_gradient(self.discriminator, d_logits[:, None])  # dL/dG(z)  [eq:gan-backward]
        self.discriminator.zero_grad()  # D's grads belong to D's own step: none survive G's pass
        self.generator.backward(d_x_fake, need_dx=False)  # dL/dtheta_G = J_G^T dL/dG(z)  [eq:gan-backward]
        return loss, self.generator.named_grads("generator")

    # ------------------------------------------------------------------ the seam
    def loss_and_grads(self, X, *, part, z=None, rng=None):
        """One player's loss and the gradients of that player's parameters (fresh arrays).

        Parameters
        ----------
        X : array_like of shape (N, D) or None
            Real data; unused (may be None) for ``part="generator"``.
        part : {"generator", "discriminator"}
        z : array_like of shape (M, latent_dim) or None
            The noise; given, the loss is a deterministic function of the parameters.
            Otherwise N rows are drawn from ``rng`` (so ``X=None`` needs ``z``).
        rng : None, int or numpy.random.Generator
            Draws ``z`` when it is not given (default: the model's generator).

        Returns
        -------
        loss : float
            ``[eq:gan-d-loss]`` for the discriminator; ``[eq:gan-g-nonsat]`` or
            ``[eq:gan-g-minimax]`` for the generator.
        grads : dict {name: ndarray}
            Keys ``"discriminator.*"`` or ``"generator.*"`` only.
        """
        self._check_built()
        check_option(part, "part", ("generator", "discriminator"))
        if part == "discriminator":
            X = self._check_X(X)
            z = self._check_z(z, X.shape[0], rng)
            loss, grads, _ = self._discriminator_pass(X, z)
        else:
            if X is not None:
                X = self._check_X(X)
            if z is None and X is None:
                raise ValueError("part='generator' needs z (M, latent_dim) or X to size the noise")
            z = self._check_z(z, None if X is None else X.shape[0], rng)
            loss, grads = self._generator_pass(z)
        return loss, {k: g.copy() for k, g in grads.items()}

    # ------------------------------------------------------------------ training
    def fit(self, X, epochs=100, batch_size=64, lr=2e-4, betas=(0.5, 0.999), *, progress=True):
        """Alternating minibatch Adam: ``k`` D steps, then one G step; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (N, D)
        epochs : int
            Passes over ``X``; every minibatch of real data is one D step.
        batch_size : int
            Real points per D step; the noise batches have the same size.
        lr : float
            Adam's learning rate for both players.
        betas : (float, float)
            Adam's decay rates; the default :math:`\\beta_1 = 0.5` (Radford et al., 2016)
            damps the momentum that makes the alternating game oscillate.
        progress : bool
            Progress bar (only on a TTY).

        Notes
        -----
        Existing parameters are trained further (fresh optimisers); otherwise
        :meth:`build` runs first.  A non-finite loss raises ``FloatingPointError``.
        """
        epochs = check_positive_int(epochs, "epochs", minimum=0)
        batch_size = check_positive_int(batch_size, "batch_size")
        lr = check_positive_float(lr, "lr")
        if self.generator is None:
            self.build(check_array(X, "X", dtype=self.dtype).shape[1])
        X = self._check_X(X)
        N, L, rng = X.shape[0], self.latent_dim, self._rng
        opt_d = Adam(self.discriminator.named_parameters("discriminator"), lr=lr, betas=betas)
        opt_g = Adam(self.generator.named_parameters("generator"), lr=lr, betas=betas)
        h = self.history_ = {"epoch": [], "d_loss": [], "g_loss": [], "d_real": [], "d_fake": []}
        bar = progress_bar(total=epochs, desc="GAN", enabled=progress, unit="epoch")
        try:
            for epoch in range(epochs):
                perm = rng.permutation(N)
                d_sum = g_sum = real_sum = fake_sum = 0.0
                n_d = n_g = 0
                for s in range(0, N, batch_size):
                    Xb = X[perm[s:s + batch_size]]
                    z = rng.standard_normal((Xb.shape[0], L), dtype=self.dtype)
                    d_loss, d_grads, (real, fake) = self._discriminator_pass(Xb, z)
                    if not np.isfinite(d_loss):
                        raise FloatingPointError(f"training diverged: D loss {d_loss} in epoch {epoch + 1}")
                    opt_d.step(d_grads)
                    d_sum, real_sum, fake_sum, n_d = d_sum + d_loss, real_sum + real, fake_sum + fake, n_d + 1
                    if opt_d.n_steps % self.k == 0:
                        z = rng.standard_normal((batch_size, L), dtype=self.dtype)
                        g_loss, g_grads = self._generator_pass(z)
                        if not np.isfinite(g_loss):
                            raise FloatingPointError(f"training diverged: G loss {g_loss} in epoch {epoch + 1}")
                        opt_g.step(g_grads)
                        g_sum, n_g = g_sum + g_loss, n_g + 1
                h["epoch"].append(epoch + 1)
                h["d_loss"].append(d_sum / n_d)
                h["g_loss"].append(g_sum / n_g if n_g else None)
                h["d_real"].append(real_sum / n_d)
                h["d_fake"].append(fake_sum / n_d)
                bar.update(1)
                bar.set_postfix({"d_loss": f"{h['d_loss'][-1]:.3f}"})
        finally:
            bar.close()
        return self

    # ------------------------------------------------------------------ use
    def generate(self, z):
        """:math:`G(z)` for given noise ``z`` (M, latent_dim), shape (M, D)."""
        self._check_built()
        return self.generator.forward(check_array(z, "z", dtype=self.dtype, n_features=self.latent_dim))

    def sample(self, n, rng=None):
        """``n`` draws :math:`G(z)`, :math:`z \\sim N(0, I)`, shape (n, D)."""
        self._check_built()
        n = check_positive_int(n, "n")
        return self.generator.forward(check_rng(rng).standard_normal((n, self.latent_dim), dtype=self.dtype))

    def discriminate(self, X):
        """:math:`D(x) = \\sigma(\\text{logit})`, the probability that each row is real, shape (N,)."""
        X = self._check_X(X)
        return sigmoid(self.discriminator.forward(X)[:, 0])

    # ------------------------------------------------------------------ persistence

    @classmethod
    def _from_config(cls, cfg):
        D = cfg.pop("n_features")
        return cls(**{**cfg, "generator_hidden": tuple(cfg["generator_hidden"]),
                      "discriminator_hidden": tuple(cfg["discriminator_hidden"])}).build(D)

