"""A PixelCNN prior over a VQ-VAE's discrete codes: fitting, sampling, the likelihood bound, saving.

The ``n_latents`` = L codes of an example are laid out as an (h, w) grid, hw = L, in raster order,
and modelled by a :class:`~probgen.models.PixelCNN` with ``levels = n_codes``, an exact pmf over
the :math:`K^L` code grids ``[eq:vq-prior]``.  With the deterministic encoder's codes
:math:`z^*(x)` and a Bernoulli decoder,
:math:`\\log p(x) \\ge \\log p(z^*(x)) + \\log p(x \\mid z^*(x))` ``[eq:vq-bound]``.  Derivations in
``docs/vqvae.md``.  These functions back the :class:`~probgen.models.VQVAE` methods of the same
names and assume a built model.
"""
from __future__ import annotations

import math

import numpy as np

from .._validation import NotFittedError, check_option, check_positive_int, check_rng
from ..io import save_npz_json
from ..nn.functional import sigmoid
from ..nn.losses import bernoulli_nll_forward
from ._persist import _format
from .pixelcnn import PixelCNN

__all__ = ["default_grid", "check_grid"]

_PRIOR_PREFIX = "prior."


def default_grid(n_latents):
    """The most square :math:`(h, w)` with :math:`hw` = ``n_latents`` and :math:`h \\le w`."""
    n = check_positive_int(n_latents, "n_latents")
    h = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return h, n // h


def check_grid(grid, n_latents):
    """``grid`` as a pair of ints with product ``n_latents`` (None: :func:`default_grid`)."""
    if grid is None:
        return default_grid(n_latents)
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise TypeError(f"grid must be a pair (h, w) or None, got {grid!r}")
    h, w = (check_positive_int(g, "grid[i]") for g in grid)
    if h * w != n_latents:
        raise ValueError(f"grid {(h, w)} has {h * w} cells, but the model has n_latents={n_latents} codes "
                         f"per example (h * w must equal n_latents)")
    return h, w


def _prior(vq):
    vq.named_parameters()  # NotFittedError for an unbuilt model
    if vq.prior_ is None:
        raise NotFittedError("This VQVAE has no prior yet; call fit_prior(X) first")
    return vq.prior_


def fit_prior(vq, X, *, grid, channels, n_layers, kernel_size, first_kernel_size, epochs, batch_size, lr,
              validation, progress, rng):
    """A PixelCNN fitted to the code grids of ``X`` (see :meth:`VQVAE.fit_prior`)."""
    vq.named_parameters()
    if not 2 <= vq.n_codes <= 256:
        raise ValueError(f"the PixelCNN prior models 2 to 256 codes (its levels), but this VQVAE has "
                         f"n_codes={vq.n_codes}")
    h, w = check_grid(grid, vq.n_latents)
    codes = vq.encode(X).reshape(-1, h, w)
    if validation is not None:
        validation = vq.encode(vq._check_X(validation, "validation")).reshape(-1, h, w)
    prior = PixelCNN((h, w), channels=channels, n_layers=n_layers, kernel_size=kernel_size,
                     first_kernel_size=first_kernel_size, levels=vq.n_codes, rng=rng, dtype=vq.dtype)
    return prior.fit(codes, epochs=epochs, batch_size=batch_size, lr=lr, validation=validation, progress=progress)


def code_log_prob(vq, codes):
    """Exact :math:`\\log p(z)` of codes (N, L) under the prior, shape (N,) ``[eq:vq-prior]``."""
    prior = _prior(vq)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != vq.n_latents or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be an integer array of shape (N, {vq.n_latents}), got "
                         f"{codes.dtype} {codes.shape}")
    return prior.score_samples(codes.reshape((-1,) + prior.image_shape))


def sample_codes(vq, n, rng):
    """``n`` code strings (n, L), int64, drawn from the prior grid by grid."""
    prior = _prior(vq)
    n = check_positive_int(n, "n")
    return prior.sample(n, rng).reshape(n, vq.n_latents).astype(np.int64)


def sample(vq, n, rng, kind):
    """Decoded prior samples: means (``kind="mean"``) or Bernoulli draws (``kind="draw"``), (n, D)."""
    check_option(kind, "kind", ("mean", "draw"))
    if kind == "draw" and vq.likelihood != "bernoulli":
        raise ValueError(f"kind='draw' needs likelihood='bernoulli'; a {vq.likelihood!r} decoder has no noise "
                         f"model to draw from (use kind='mean')")
    rng = check_rng(rng)
    out = vq.decode(sample_codes(vq, n, rng))
    if vq.likelihood == "squared_error":
        return out
    probs = sigmoid(out).astype(vq.dtype, copy=False)
    return probs if kind == "mean" else (rng.random(probs.shape) < probs).astype(vq.dtype)


def log_likelihood_bound(vq, X):
    """:math:`\\log p(z^*) + \\log p(x \\mid z^*)` per row of binary ``X``, nats ``[eq:vq-bound]``."""
    prior = _prior(vq)
    if vq.likelihood != "bernoulli":
        raise ValueError("log_likelihood_bound needs likelihood='bernoulli': the squared error is not the "
                         "negative log of a normalised density unless a noise variance is fixed, which this "
                         f"model does not have (got likelihood={vq.likelihood!r})")
    X = vq._check_X(X)
    if not np.all((X == 0) | (X == 1)):
        raise ValueError("X must be binary (0/1) for the Bernoulli likelihood to be a pmf and the bound to hold")
    codes = vq.encode(X)
    log_prior = prior.score_samples(codes.reshape((-1,) + prior.image_shape))
    nll, _ = bernoulli_nll_forward(vq.decode(codes), X)  # -log p(x | z*)  [eq:bernoulli-nll-logits]
    return log_prior - nll  # [eq:vq-bound]


# ----------------------------------------------------------------------------- persistence
class _WithPrior:
    """A VQVAE and its prior as one parameter set for :func:`probgen.models._persist.load_model`.

    ``VQVAE._from_config`` returns this bundle when the saved configuration holds a prior, so
    ``load_model`` checks and fills both parameter sets (the prior's under ``prior.``) before
    :func:`unbundle` hands back the VQVAE.
    """

    def __init__(self, vq):
        self.vq = vq

    def named_parameters(self):
        own = self.vq.named_parameters()
        return {**own, **{_PRIOR_PREFIX + k: v for k, v in self.vq.prior_.named_parameters().items()}}

    @property
    def history_(self):
        return self.vq.history_

    @history_.setter
    def history_(self, value):
        self.vq.history_ = value


def save_with_prior(vq, path):
    """One ``.npz`` in :func:`~probgen.models._persist.save_model`'s format plus the prior (``prior.*``)."""
    prior = vq.prior_
    config = {**vq._config(), "prior": {"config": prior._config(), "history": prior.history_}}
    meta = {"format": _format(type(vq)), "config": config, "history": vq.history_}
    save_npz_json(path, _WithPrior(vq).named_parameters(), meta)


def attach_saved_prior(vq, saved):
    """Give a freshly built ``vq`` an (unfilled) prior built from its saved configuration; the bundle."""
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ValueError(f"the saved prior must be a dict with a 'config', got {saved!r}")
    prior = PixelCNN._from_config(dict(saved["config"]))
    if prior.levels != vq.n_codes or math.prod(prior.image_shape) != vq.n_latents:
        raise ValueError(f"the saved prior (levels={prior.levels}, grid={prior.image_shape}) does not fit "
                         f"n_codes={vq.n_codes}, n_latents={vq.n_latents}")
    prior.history_ = saved.get("history")
    vq.prior_ = prior
    return _WithPrior(vq)


def unbundle(model):
    """The VQVAE inside what ``load_model`` returned."""
    return model.vq if isinstance(model, _WithPrior) else model
