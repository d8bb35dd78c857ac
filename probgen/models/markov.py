"""Parameter counting for binary joint distributions, and the first-order Markov chain over pixels.

:func:`count_parameters` reproduces the counts of ``docs/autoregressive.md``
``[eq:param-counts]``: the full joint table and the tabular chain rule both need
:math:`2^n - 1` numbers, the Markov assumption :math:`2n - 1`, FVSBN
:math:`n(n+1)/2` and NADE :math:`2nH + n + H`.

:class:`MarkovChain` is the :math:`2n-1`-parameter model
:math:`p(x) = p(x_1)\\prod_{d\\ge2} p(x_d\\mid x_{d-1})` over the raster order
``[eq:markov]``, parameterised by logits so that it is also a (very sparse)
FVSBN; its maximum-likelihood fit has a closed form by counting
``[eq:markov-counts]``.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_nonnegative_float, check_option, check_positive_int
from ..nn.functional import sigmoid
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward
from ._autoregressive import BinaryAutoregressive

__all__ = ["count_parameters", "markov_logits", "markov_counts", "MarkovChain"]

MODEL_KINDS = ("full_joint", "chain_rule", "independent", "markov", "fvsbn", "nade")


def count_parameters(model_kind: str, n: int, n_hidden: int | None = None) -> int:
    """Number of free parameters of a distribution over ``n`` binary variables ``[eq:param-counts]``.

    Parameters
    ----------
    model_kind : {"full_joint", "chain_rule", "independent", "markov", "fvsbn", "nade"}
        ``"full_joint"``: one probability per configuration, less one for
        normalisation, :math:`2^n - 1`.  ``"chain_rule"``: tabular conditionals
        :math:`p(x_d \\mid x_{<d})`, :math:`1 + 2 + \\dots + 2^{n-1} = 2^n - 1`.
        ``"independent"``: :math:`n` (one Bernoulli mean per variable).
        ``"markov"``: :math:`1 + 2(n-1) = 2n - 1`.  ``"fvsbn"``:
        :math:`n` biases and :math:`n(n-1)/2` weights, :math:`n(n+1)/2`.
        ``"nade"``: :math:`W` (:math:`H \\times n`), :math:`V` (:math:`n \\times H`),
        :math:`b` (:math:`n`), :math:`c` (:math:`H`): :math:`2nH + n + H`.
    n : int
        Number of binary variables (pixels), :math:`n \\ge 1`.
    n_hidden : int or None
        :math:`H`, required for ``"nade"`` only.

    Returns
    -------
    int
        Exact (a Python int, so :math:`2^{784} - 1` is not rounded).
    """
    check_option(model_kind, "model_kind", MODEL_KINDS)
    n = check_positive_int(n, "n")
    if model_kind == "nade":
        if n_hidden is None:
            raise ValueError("count_parameters('nade', n, n_hidden) needs n_hidden (H)")
        H = check_positive_int(n_hidden, "n_hidden")
        return 2 * n * H + n + H  # [eq:param-counts]
    if n_hidden is not None:
        raise ValueError(f"n_hidden is only meaningful for model_kind='nade', got n_hidden={n_hidden!r} "
                         f"for {model_kind!r}")
    return {
        "full_joint": 2 ** n - 1,
        "chain_rule": sum(2 ** (d - 1) for d in range(1, n + 1)),  # = 2^n - 1
        "independent": n,
        "markov": 2 * n - 1,
        "fvsbn": n * (n + 1) // 2,
    }[model_kind]  # [eq:param-counts]


def markov_logits(X, b, w) -> np.ndarray:
    """Conditional logits of the first-order chain ``[eq:markov]``.

    Parameters
    ----------
    X : ndarray of shape (N, D), valid binary data in the dtype of ``b``
    b : ndarray of shape (D,)
        :math:`b_1` is the logit of :math:`p(x_1 = 1)`, :math:`b_d` that of
        :math:`p(x_d = 1\\mid x_{d-1} = 0)`.
    w : ndarray of shape (D - 1,)
        :math:`w_d`: what :math:`x_{d-1} = 1` adds to the logit of pixel :math:`d`.

    Returns
    -------
    L : ndarray of shape (N, D)
        :math:`\\ell_1 = b_1`, :math:`\\ell_d = b_d + w_d\\,x_{d-1}`.
    """
    L = np.empty(X.shape, dtype=b.dtype)
    L[:] = b
    L[:, 1:] += X[:, :-1] * w  # [eq:markov]
    return L


def markov_counts(X, alpha: float = 1.0):
    """Closed-form fit of the chain by counting, with Laplace smoothing ``[eq:markov-counts]``.

    Parameters
    ----------
    X : ndarray of shape (N, D), valid binary data
    alpha : float >= 0
        Pseudo-count added to both outcomes of every conditional:
        :math:`\\hat p = (n_{k1} + \\alpha)/(n_k + 2\\alpha)`.  ``alpha=0`` is the
        maximum-likelihood estimate; ``alpha > 0`` the posterior mode under a
        :math:`\\mathrm{Beta}(\\alpha+1, \\alpha+1)` prior on each conditional.

    Returns
    -------
    b : ndarray of shape (D,), float64
    w : ndarray of shape (D - 1,), float64
        The logit parameters of :func:`markov_logits`.

    Raises
    ------
    ValueError
        With ``alpha=0``, when an estimate is 0 or 1 (an infinite logit) or a
        parent state never occurs: the MLE does not exist in the logit
        parameterisation; use ``alpha > 0``.
    """
    X = np.asarray(X, dtype=np.float64)
    N = X.shape[0]
    prev, cur = X[:, :-1], X[:, 1:]
    n1 = prev.sum(axis=0)                                   # parents equal to 1
    ones = np.concatenate([[X[:, 0].sum()], (prev * cur).sum(axis=0), ((1 - prev) * cur).sum(axis=0)])
    totals = np.concatenate([[N], n1, N - n1])
    if alpha == 0 and np.any((ones == 0) | (ones == totals)):
        k = int(np.flatnonzero((ones == 0) | (ones == totals))[0])
        D = X.shape[1]
        what = ("p(x_1 = 1)" if k == 0 else f"p(x_{k + 1} = 1 | x_{k} = 1)" if k < D
                else f"p(x_{k - D + 2} = 1 | x_{k - D + 1} = 0)")
        raise ValueError(
            f"alpha=0: the maximum-likelihood estimate of {what} is {ones[k]:g}/{totals[k]:g}, so its logit "
            "is infinite or undefined; use Laplace smoothing alpha > 0")
    p = (ones + alpha) / (totals + 2.0 * alpha)  # [eq:markov-counts]
    logit = np.log(p) - np.log1p(-p)
    D = X.shape[1]
    b = np.concatenate([logit[:1], logit[D:]])              # p(x_1), p(x_d | x_{d-1} = 0)
    w = logit[1:D] - logit[D:]                              # logit p(.|1) - logit p(.|0)
    return b, w


class MarkovChain(BinaryAutoregressive):
    """First-order Markov chain over binary pixels in raster order ``[eq:markov]``.

    Parameters
    ----------
    alpha : float >= 0
        Laplace pseudo-count of the closed-form fit ``[eq:markov-counts]``
        (``fit(method="counts")``); gradient training ignores it.
    rng : None, int or numpy.random.Generator
        Shuffling (gradient fit) and sampling.
    dtype : float32 or float64

    Attributes
    ----------
    n_features_in_ : int
    history_ : dict
    n_parameters_ : int
        :math:`2D - 1` ``[eq:param-counts]``.

    Notes
    -----
    Parameters ``b`` (D,) and ``w`` (D-1,): :math:`\\ell_1 = b_1`,
    :math:`\\ell_d = b_d + w_d x_{d-1}`.  The two tables of the notes,
    :math:`p(x_d = 1\\mid x_{d-1} = k)`, are :math:`\\sigma(b_d)` and
    :math:`\\sigma(b_d + w_d)`; a map between :math:`(0,1)^{2D-1}` and
    :math:`\\mathbb R^{2D-1}`, so nothing is lost.
    """

    def __init__(self, alpha=1.0, rng=None, dtype=np.float64):
        super().__init__(rng=rng, dtype=dtype)
        self.alpha = check_nonnegative_float(alpha, "alpha")

    def _config_extra(self):
        return {"alpha": self.alpha}

    def _init_params(self, D, rng):
        return {"b": np.zeros(D), "w": np.zeros(D - 1)}

    def _logits(self, X):
        return markov_logits(X, self._params["b"], self._params["w"])

    def _loss_and_grads(self, X):
        N = X.shape[0]
        value, cache = bernoulli_nll_forward(self._logits(X), X)  # [eq:ar-nll]
        dL = bernoulli_nll_backward(np.full(N, 1.0 / N, dtype=self.dtype), cache)
        grads = {"b": dL.sum(axis=0), "w": np.einsum("nd,nd->d", dL[:, 1:], X[:, :-1])}
        return float(np.mean(value, dtype=np.float64)), grads

    def _sample(self, U):
        b, w = self._params["b"], self._params["w"]
        out = np.empty_like(U)
        out[:, 0] = U[:, 0] < sigmoid(b[:1])
        for d in range(1, U.shape[1]):
            out[:, d] = U[:, d] < sigmoid(b[d] + w[d - 1] * out[:, d - 1])  # [eq:markov]
        return out

    def fit(self, X, epochs=10, batch_size=100, lr=0.05, *, method="counts", validation=None, progress=True,
            checkpoint=None, resume=None, lr_decay=1.0, weight_decay=0.0, keep_best=False, callback=None,
            lr_schedule="exponential", lr_warmup=0):
        """Fit by counting (default) or by minibatch Adam on the mean NLL; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (N, D), binary
        method : {"counts", "adam"}
            ``"counts"``: the closed form ``[eq:markov-counts]`` with pseudo-count
            ``alpha`` (the training arguments are ignored; the parameters are
            replaced).  ``"adam"``: :meth:`BinaryAutoregressive.fit
            <probgen.models._autoregressive.BinaryAutoregressive.fit>` on the
            logits, which converges to the ``alpha=0`` answer.
        epochs, batch_size, lr, validation, progress, checkpoint, resume, lr_decay, weight_decay, keep_best, callback
            As for :meth:`probgen.models.NADE.fit` (``validation`` is scored by both methods), as are
            ``lr_schedule`` and ``lr_warmup``.

        Notes
        -----
        ``history_`` after ``"counts"``: ``{"method": "counts", "train_nll": [...],
        "validation_nll": [...]}`` (one entry each).
        """
        check_option(method, "method", ("counts", "adam"))
        if method == "adam":
            return super().fit(X, epochs, batch_size, lr, validation=validation, progress=progress,
                               checkpoint=checkpoint, resume=resume, lr_decay=lr_decay,
                               weight_decay=weight_decay, keep_best=keep_best, callback=callback,
                               lr_schedule=lr_schedule, lr_warmup=lr_warmup)
        X, validation = self._prepare_fit(X, validation, rebuild=True)
        b, w = markov_counts(X, self.alpha)
        self._params["b"][...] = b
        self._params["w"][...] = w
        self.history_ = {"method": "counts", "train_nll": [self._evaluate(X, None)]}
        if validation is not None:
            self.history_["validation_nll"] = [self._evaluate(validation, None)]
        return self
