"""What the fully-visible binary autoregressive models share (private).

:class:`BinaryAutoregressive` is the thin estimator around a model that factorises
:math:`p(x) = \\prod_d p(x_d \\mid x_{<d})` over the raster order ``[eq:chain-rule]``
with Bernoulli conditionals given by logits :math:`\\ell_d(x_{<d})`.  A subclass
(:class:`~probgen.models.markov.MarkovChain`, :class:`~probgen.models.fvsbn.FVSBN`,
:class:`~probgen.models.nade.NADE`) supplies the maths through a few hooks:

* ``_init_params(D, rng) -> {name: ndarray}`` -- fresh parameters in ``self.dtype``;
* ``_logits(X) -> L`` -- the conditional logits, shape (N, D), of valid ``X``;
* ``_loss_and_grads(X) -> (loss, grads)`` -- mean NLL of valid ``X`` and its gradients
  (the arrays may be reused between calls; the public method copies them);
* ``_sample(U) -> X`` -- ancestral sampling driven by uniforms ``U`` of shape (n, D):
  :math:`x_d = [u_d < \\sigma(\\ell_d(x_{<d}))]`;
* ``_config_extra() -> dict`` -- hyper-parameters for :meth:`save`;
* ``_free_parameters() -> int`` -- the number of free parameters ``[eq:param-counts]``.

Everything else (input checks, the binary-data check, ``fit`` through the training
loop of :mod:`probgen.models._training`, ``score_samples``/``score``, ``sample``,
``save``/``load``) lives here once.
"""
from __future__ import annotations

import numpy as np

from .._validation import (
    NotFittedError,
    check_array,
    check_dtype,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_rng,
)
from ..io import rng_state, set_rng_state
from ..nn.losses import bernoulli_nll_forward
from . import _training
from ._persist import load_model, save_model

__all__ = ["BinaryAutoregressive", "check_binary"]


def check_binary(X: np.ndarray, name: str, model: str) -> np.ndarray:
    """Raise ``ValueError`` unless every entry of the (already numeric) ``X`` is 0 or 1."""
    if not np.all((X == 0) | (X == 1)):
        bad = np.argwhere((X != 0) & (X != 1))[0]
        raise ValueError(
            f"{model} models binary data, but {name} holds {float(X[tuple(bad)]):g} at index "
            f"{tuple(int(i) for i in bad)} (values in [{X.min():g}, {X.max():g}]); binarise it first with "
            "probgen.datasets.binarize"
        )
    return X


def marginal_logits(X: np.ndarray, dtype) -> np.ndarray:
    """Logits of the add-one smoothed pixel means :math:`(\\sum_n x_{nd} + 1)/(N + 2)`, shape (D,)."""
    p = (X.sum(axis=0, dtype=np.float64) + 1.0) / (X.shape[0] + 2.0)
    return np.log(p / (1.0 - p)).astype(dtype)


class BinaryAutoregressive:
    """Base class: checks, training, evaluation, sampling and persistence (see the module doc)."""

    _score_name = "nll"
    _higher_is_better = False
    _bias_name = "b"  # initialised from the data marginals by fit() on a fresh model

    def __init__(self, rng=None, dtype=np.float64):
        check_rng(rng)
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.n_features_in_ = None
        self.history_ = None
        self._params = None

    # ------------------------------------------------------------------ hooks (subclasses)
    def _init_params(self, D, rng):  # pragma: no cover - abstract
        raise NotImplementedError

    def _logits(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss_and_grads(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample(self, U):  # pragma: no cover - abstract
        raise NotImplementedError

    def _config_extra(self) -> dict:
        return {}

    def _free_parameters(self) -> int:
        return int(sum(p.size for p in self._params.values()))

    # ------------------------------------------------------------------ construction
    def _config(self) -> dict:
        return {**self._config_extra(), "dtype": self.dtype.name, "n_features": self.n_features_in_}

    def build(self, n_features):
        """Create freshly initialised parameters for ``n_features`` pixels; returns ``self``.

        The generator made from the constructor's ``rng`` draws the initial weights
        and is then kept for shuffling and sampling, so a seed reproduces a run.
        """
        D = check_positive_int(n_features, "n_features")
        self._rng = check_rng(self.rng)
        self.n_features_in_ = D
        self._params = {k: np.ascontiguousarray(v, dtype=self.dtype)
                        for k, v in self._init_params(D, self._rng).items()}
        return self

    def _check_built(self):
        if self._params is None:
            raise NotFittedError(f"This {type(self).__name__} has no parameters yet; call fit(X), "
                                 f"build(n_features) or {type(self).__name__}.load(path) first")

    def named_parameters(self) -> dict[str, np.ndarray]:
        """``{name: live parameter array}``; writing into the arrays changes the model."""
        self._check_built()
        return dict(self._params)

    @property
    def n_parameters_(self) -> int:
        """Free parameters ``[eq:param-counts]`` (masked-out entries are not counted)."""
        self._check_built()
        return self._free_parameters()

    # ------------------------------------------------------------------ input checks
    def _check_X(self, X, name="X"):
        self._check_built()
        X = check_array(X, name, dtype=self.dtype, n_features=self.n_features_in_)
        return check_binary(X, name, type(self).__name__)

    # ------------------------------------------------------------------ the seam
    def loss_and_grads(self, X):
        """Mean negative log-likelihood of ``X`` (N, D) in nats and its gradients.

        Returns
        -------
        loss : float
            :math:`-\\frac1N\\sum_n \\log p(x_n)` ``[eq:ar-nll]``.
        grads : dict {name: ndarray}
            Fresh arrays, keys of :meth:`named_parameters`.
        """
        loss, grads = self._loss_and_grads(self._check_X(X))
        return float(loss), {k: np.array(g, copy=True) for k, g in grads.items()}

    def _batch_step(self, Xb, rng, beta):
        return self._loss_and_grads(Xb)

    def _evaluate(self, X, rng):
        return -float(np.mean(self._log_prob(X), dtype=np.float64))

    # ------------------------------------------------------------------ evaluation
    def conditional_logits(self, X):
        """Logits :math:`\\ell_d = \\log\\frac{p(x_d=1\\mid x_{<d})}{p(x_d=0\\mid x_{<d})}`, shape (N, D).

        Entry ``[n, d]`` depends on ``X[n, :d]`` only (the autoregressive property).
        """
        return self._logits(self._check_X(X))

    def _log_prob(self, X, chunk=4096):
        out = np.empty(X.shape[0], dtype=self.dtype)
        for s in range(0, X.shape[0], chunk):
            nll, _ = bernoulli_nll_forward(self._logits(X[s:s + chunk]), X[s:s + chunk])  # [eq:ar-nll]
            out[s:s + chunk] = -nll
        return out

    def score_samples(self, X):
        """Exact :math:`\\log p(x_n) = \\sum_d \\log p(x_{nd}\\mid x_{n,<d})` in nats ``[eq:chain-rule]``.

        Returns
        -------
        ndarray of shape (N,), the model's dtype
        """
        return self._log_prob(self._check_X(X))

    def score(self, X) -> float:
        """Mean exact log-likelihood per example (nats)."""
        return float(np.mean(self.score_samples(X), dtype=np.float64))

    def sample(self, n, rng=None):
        """Draw ``n`` binary vectors by ancestral sampling, one pixel at a time (D steps).

        Parameters
        ----------
        n : int
        rng : None, int or numpy.random.Generator
            Default: the model's own generator.

        Returns
        -------
        ndarray of shape (n, D), the model's dtype, values 0 and 1
        """
        self._check_built()
        n = check_positive_int(n, "n")
        gen = self._rng if rng is None else check_rng(rng)
        U = gen.random((n, self.n_features_in_)).astype(self.dtype)  # x_d = [u_d < p_d]
        return self._sample(U)

    # ------------------------------------------------------------------ training
    def _prepare_fit(self, X, validation, rebuild=False):
        """Check the data (nothing changes if a check fails), then build a fresh model if needed."""
        X = check_binary(check_array(X, "X", dtype=self.dtype), "X", type(self).__name__)
        D = X.shape[1]
        fresh = rebuild or self._params is None
        if not fresh and D != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features (last axis) like the data this "
                             f"{type(self).__name__} was built for, got shape {X.shape}")
        if validation is not None:
            validation = check_binary(check_array(validation, "validation", dtype=self.dtype, n_features=D),
                                      "validation", type(self).__name__)
        if fresh:
            self.build(D)
            if self._bias_name in self._params:
                self._params[self._bias_name][...] = marginal_logits(X, self.dtype)
        return X, validation

    def fit(self, X, epochs=10, batch_size=100, lr=1e-3, *, validation=None, progress=True, checkpoint=None,
            resume=None, lr_decay=1.0, weight_decay=0.0, keep_best=False, callback=None,
            lr_schedule="exponential", lr_warmup=0):
        """Minibatch Adam on the mean negative log-likelihood; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (N, D), binary (uint8, bool or float 0/1)
        epochs : int
            Total number of epochs (a resumed run continues up to this number).
        batch_size : int
        lr : float
            Adam's learning rate (torch's defaults otherwise).
        validation : array_like of shape (N_v, D) or None
            Scored after every epoch: ``history_["validation_nll"]`` (exact, nats).
        progress : bool
            Progress bar (only on a TTY).
        checkpoint, resume : path or None
            Per-epoch atomic checkpoint and resumption, as for :meth:`probgen.models.VAE.fit`.
        lr_decay : float in (0, 1]
            Learning rate of epoch :math:`e` (from 0) is ``lr * lr_decay**e``.
        lr_schedule : {"exponential", "cosine"}
            ``"cosine"``: the rate falls from ``lr`` to zero over the ``epochs`` of the run, step by
            step ``[eq:lr-schedule]`` (then ``lr_decay`` must stay 1).
        lr_warmup : int
            Steps of linear learning-rate warm-up (0: none).
        weight_decay : float >= 0
            L2 penalty added to the gradients by Adam (torch's coupled form); it keeps
            masked (zero) weights at zero.
        keep_best : bool
            At the end, restore the parameters of the epoch with the lowest validation NLL.
        callback : callable or None
            ``callback(epoch, model)`` after each epoch; a true return value stops training.

        Notes
        -----
        A model without parameters is built first and its biases start at the logits
        of the add-one smoothed pixel means of ``X``; a model that already has
        parameters continues from them with a fresh optimiser.
        ``history_`` holds ``epoch``, ``train_nll`` (mean of the minibatch losses
        during the epoch), ``validation_nll`` and ``lr``.
        """
        epochs = check_positive_int(epochs, "epochs", minimum=0)
        batch_size = check_positive_int(batch_size, "batch_size")
        lr = check_positive_float(lr, "lr")
        lr_decay = check_positive_float(lr_decay, "lr_decay")
        if lr_decay > 1:
            raise ValueError(f"lr_decay must be in (0, 1] (a per-epoch factor), got {lr_decay}")
        weight_decay = check_nonnegative_float(weight_decay, "weight_decay")
        _training.check_schedule(lr_schedule, lr_warmup, lr_decay)
        X, validation = self._prepare_fit(X, validation)
        return _training.train(self, X, epochs=epochs, batch_size=batch_size, lr=lr, validation=validation,
                               progress=progress, checkpoint=checkpoint, resume=resume, lr_decay=lr_decay,
                               weight_decay=weight_decay, keep_best=keep_best, callback=callback,
                               lr_schedule=lr_schedule, lr_warmup=lr_warmup,
                               desc=type(self).__name__)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Parameters, configuration, history and generator state to one ``.npz`` (atomic, no pickle)."""
        self._check_built()
        save_model(self, path, rng=rng_state(self._rng))

    @classmethod
    def _from_config(cls, cfg):
        D = cfg.pop("n_features")
        return cls(**cfg).build(D)

    @classmethod
    def load(cls, path):
        """A model read back from :meth:`save` (``ValueError`` on a corrupt or foreign file)."""
        model, meta = load_model(cls, path)
        if meta.get("rng") is not None:
            try:
                bit_generator = getattr(np.random, str(meta["rng"].get("bit_generator")), None)
                if not (isinstance(bit_generator, type) and issubclass(bit_generator, np.random.BitGenerator)):
                    raise ValueError(f"unknown bit generator {meta['rng'].get('bit_generator')!r}")
                model._rng = set_rng_state(np.random.Generator(bit_generator()), meta["rng"])
            except (AttributeError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: unusable generator state: {exc}") from None
        return model
