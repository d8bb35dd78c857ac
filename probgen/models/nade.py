"""Neural autoregressive distribution estimator (Larochelle & Murray, 2011), tied weights, hand-written backward.

:math:`a_1 = c`, :math:`h_d = \\sigma(a_d)`, :math:`\\ell_d = b_d + V_d \\cdot h_d`,
:math:`a_{d+1} = a_d + W_d\\,x_d` ``[eq:nade-forward]`` ``[eq:nade-running]``: every
conditional shares the input weights, so the hidden pre-activation is a running
sum and one pass costs :math:`O(HD)`; the backward pass accumulates
:math:`\\partial L/\\partial a_d` from the last pixel to the first, again
:math:`O(HD)` ``[eq:nade-backward]``.  ``W`` is stored in probgen's "in, out"
layout, shape (D, H): row :math:`d` is the paper's column :math:`W_{:,d}`.

The compiled path works on a few examples at a time: a Numba kernel writes the
negated running pre-activations :math:`-a_d` for all :math:`d` into a buffer
that stays in cache, NumPy's vectorised ``exp`` turns them into
:math:`e^{-a_d}` in place, and a second Numba kernel forms
:math:`h_d = 1/(1 + e^{-a_d})`, the logits and the whole backward pass (dot
products and AXPYs on contiguous rows; the input-weight updates only for the
pixels that are on).  :func:`nade_logits_reference`,
:func:`nade_loss_and_grads_reference` and :func:`nade_sample_reference` are the
plain NumPy twins (loop over :math:`d`, arrays of shape (N, H)) that define the
meaning and that the tests compare against.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from .._validation import check_positive_int
from ..nn.functional import sigmoid
from ..nn.init import glorot_uniform
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward
from ._autoregressive import BinaryAutoregressive

__all__ = ["NADE", "nade_logits", "nade_logits_reference", "nade_loss_and_grads",
           "nade_loss_and_grads_reference", "nade_sample", "nade_sample_reference"]

_GROUP_ELEMENTS = 1 << 20  # examples per kernel call: G * D * H about this many (cache-sized buffer)
_MIN_ROWS_PER_THREAD = 4


# --------------------------------------------------------------------------- Numba kernels
@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _neg_preactivations(X, W, c, out):  # pragma: no cover - compiled
    """``out[g, d] = -a_d = -(c + sum_{j<d} x_gj W_j)`` for every row of ``X`` (G, D); out (G, D, H)."""
    G, D = X.shape
    H = c.shape[0]
    for g in range(G):
        for k in range(H):
            out[g, 0, k] = -c[k]  # a_1 = c
        for d in range(1, D):
            x = X[g, d - 1]
            if x != 0:
                for k in range(H):
                    out[g, d, k] = out[g, d - 1, k] - x * W[d - 1, k]  # [eq:nade-running]
            else:
                for k in range(H):
                    out[g, d, k] = out[g, d - 1, k]


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _logits_from_exp(E, V, b, one, L):  # pragma: no cover - compiled
    """``E`` (G, D, H) holds exp(-a_d); overwrite it with h_d and write the logits L (G, D)."""
    G, D, H = E.shape
    for g in range(G):
        for d in range(D):
            h = E[g, d]
            for k in range(H):
                h[k] = one / (one + h[k])  # h_d = sigma(a_d)  [eq:nade-forward]
            L[g, d] = b[d] + np.dot(V[d], h)


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _forward_backward(X, E, V, W, b, scale, one, L, acc, dW, dV, db, dc):  # pragma: no cover - compiled
    """Logits, summed NLL and gradients (times ``scale``, added into dW dV db dc) of the rows of ``X``.

    ``E`` (G, D, H) holds exp(-a_d) on entry and h_d on exit.
    """
    G, D, H = E.shape
    _logits_from_exp(E, V, b, one, L)
    total = 0.0
    for g in range(G):
        for k in range(H):
            acc[k] = 0  # sum over d' > d of dLoss/da_d'
        for d in range(D - 1, -1, -1):
            ell = L[g, d]
            x = X[g, d]
            total += max(ell, 0) + np.log1p(np.exp(-abs(ell))) - x * ell  # [eq:ar-nll]
            delta = (one / (one + np.exp(-ell)) - x) * scale  # dLoss/dl_d
            db[d] += delta
            if x != 0:
                for k in range(H):
                    dW[d, k] += x * acc[k]  # W_d reaches a_{d+1}, ..., a_D  [eq:nade-backward]
            h = E[g, d]
            for k in range(H):
                hk = h[k]
                dV[d, k] += delta * hk
                acc[k] += delta * V[d, k] * (hk * (one - hk))  # [eq:nade-backward]
        for k in range(H):
            dc[k] += acc[k]  # c reaches every a_d
    return total


@njit(cache=True, error_model="numpy", fastmath=False, nogil=True)
def _sample_kernel(U, W, V, b, c, one, out):  # pragma: no cover - compiled
    n, D = U.shape
    H = c.shape[0]
    a = np.empty(H, dtype=c.dtype)
    h = np.empty(H, dtype=c.dtype)
    for i in range(n):
        for k in range(H):
            a[k] = c[k]
        for d in range(D):
            for k in range(H):
                h[k] = one / (one + np.exp(-a[k]))
            p = one / (one + np.exp(-(b[d] + np.dot(V[d], h))))
            if U[i, d] < p:  # x_d ~ Bernoulli(p)
                out[i, d] = one
                for k in range(H):
                    a[k] += W[d, k]  # [eq:nade-running]
            else:
                out[i, d] = 0


# --------------------------------------------------------------------------- public maths
def _check(X, W, V, b, c):
    arrays = {"X": X, "W": W, "V": V, "b": b, "c": c}
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be a float32 or float64 ndarray, got {getattr(a, 'dtype', type(a))}")
        if a.dtype != W.dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, W has {W.dtype}; convert once with .astype")
    if W.ndim != 2:
        raise ValueError(f"W must have shape (D, H), got {W.shape}")
    D, H = W.shape
    if V.shape != (D, H) or b.shape != (D,) or c.shape != (H,) or X.ndim != 2 or X.shape[1] != D:
        raise ValueError(f"expected X (N, {D}), W and V ({D}, {H}), b ({D},), c ({H},); got X {X.shape}, "
                         f"W {W.shape}, V {V.shape}, b {b.shape}, c {c.shape}")
    return [np.ascontiguousarray(a) for a in (X, W, V, b, c)]


def _group(D, H, N):
    return max(1, min(N, _GROUP_ELEMENTS // (D * H)))


def _n_threads(N):
    """Threads for N examples: numba's setting (``numba.set_num_threads``), at most one per 4 examples."""
    return max(1, min(numba.get_num_threads(), N // _MIN_ROWS_PER_THREAD))


_POOL = None


def _map_threads(fn, T):
    """``[fn(0), ..., fn(T - 1)]``, run on T threads (the caller runs part 0).

    The kernels are ``nogil`` and NumPy's ``exp`` releases the GIL, so the parts
    run truly in parallel; no Numba ``prange`` workers spin next to BLAS.
    """
    global _POOL
    if T == 1:
        return [fn(0)]
    if _POOL is None or _POOL._max_workers < T - 1:
        _POOL = ThreadPoolExecutor(max_workers=T - 1, thread_name_prefix="probgen-nade")
    futures = [_POOL.submit(fn, t) for t in range(1, T)]
    first = fn(0)
    return [first] + [f.result() for f in futures]


def _exp_inplace(E):
    with np.errstate(over="ignore", under="ignore"):  # e^{-a} = inf for a << 0 gives h = 0 exactly
        np.exp(E, out=E)  # NumPy's SIMD exp, on a cache-sized block


def nade_logits(X, W, V, b, c) -> np.ndarray:
    """Conditional logits of NADE in :math:`O(NHD)` (compiled) ``[eq:nade-forward]``.

    Parameters
    ----------
    X : ndarray of shape (N, D), binary, the dtype of ``W``
    W : ndarray of shape (D, H)
        Input weights; row :math:`d` enters every :math:`a_{d'}`, :math:`d' > d`.
    V : ndarray of shape (D, H)
        Output weights; row :math:`d` reads :math:`h_d`.
    b : ndarray of shape (D,)
    c : ndarray of shape (H,)

    Returns
    -------
    L : ndarray of shape (N, D)
        :math:`\\ell_{nd} = b_d + V_d\\cdot\\sigma(c + \\sum_{j<d} W_j x_{nj})`.
    """
    X, W, V, b, c = _check(X, W, V, b, c)
    (N, D), H = X.shape, c.shape[0]
    L = np.empty((N, D), dtype=W.dtype)
    if N == 0:
        return L
    T = _n_threads(N)
    bounds = np.linspace(0, N, T + 1).astype(int)
    one = W.dtype.type(1)

    def part(t):
        lo, hi = bounds[t], bounds[t + 1]
        G = _group(D, H, hi - lo)
        E = np.empty((G, D, H), dtype=W.dtype)
        for s in range(lo, hi, G):
            Eg = E[:min(G, hi - s)]
            _neg_preactivations(X[s:s + G], W, c, Eg)  # -a_d, all d  [eq:nade-running]
            _exp_inplace(Eg)
            _logits_from_exp(Eg, V, b, one, L[s:s + len(Eg)])

    _map_threads(part, T)
    return L


def nade_logits_reference(X, W, V, b, c) -> np.ndarray:
    """NumPy twin of :func:`nade_logits`: a loop over :math:`d` on arrays of shape (N, H)."""
    X, W, V, b, c = _check(X, W, V, b, c)
    N, D = X.shape
    a = np.tile(c, (N, 1))  # a_1 = c
    L = np.empty((N, D), dtype=W.dtype)
    for d in range(D):
        h = sigmoid(a)
        L[:, d] = h @ V[d] + b[d]  # [eq:nade-forward]
        a += np.outer(X[:, d], W[d])  # [eq:nade-running]
    return L


def nade_loss_and_grads(X, W, V, b, c, *, _work=None):
    """Mean NLL of binary ``X`` (N, D) and its gradients, compiled, :math:`O(NHD)` ``[eq:nade-backward]``.

    The rows are split between ``numba.get_num_threads()`` threads (at most one
    per 4 rows), each with its own buffers and gradient sums, added at the end;
    a result depends on the thread count only through that order of summation.

    Returns
    -------
    loss : float
        :math:`-\\frac1N\\sum_n\\log p(x_n)` ``[eq:ar-nll]``.
    grads : dict
        ``W``, ``V`` (D, H), ``b`` (D,), ``c`` (H,), the dtype of ``W``.
    """
    X, W, V, b, c = _check(X, W, V, b, c)
    (N, D), H = X.shape, c.shape[0]
    if N == 0:
        raise ValueError("X must have at least one row")
    T = _n_threads(N)
    work = _work if _work is not None else _Workspace(D, H, W.dtype)
    parts = work.parts(T, -(-N // T))
    bounds = np.linspace(0, N, T + 1).astype(int)
    dt = W.dtype.type
    scale, one = dt(1.0 / N), dt(1)

    def part(t):
        lo, hi = bounds[t], bounds[t + 1]
        buf = parts[t]
        g = buf.zero_grads()
        G = buf.E.shape[0]
        total = 0.0
        for s in range(lo, hi, G):
            Eg = buf.E[:min(G, hi - s)]
            _neg_preactivations(X[s:s + G], W, c, Eg)  # -a_d, all d  [eq:nade-running]
            _exp_inplace(Eg)
            total += _forward_backward(X[s:s + G], Eg, V, W, b, scale, one, buf.L, buf.acc,
                                       g["W"], g["V"], g["b"], g["c"])
        return total

    totals = _map_threads(part, T)
    grads = parts[0].grads
    for t in range(1, T):
        for k, g in parts[t].grads.items():
            grads[k] += g
    return sum(totals) / N, grads


def nade_loss_and_grads_reference(X, W, V, b, c):
    """NumPy twin of :func:`nade_loss_and_grads` (stores every :math:`h_d`, shape (D, N, H))."""
    X, W, V, b, c = _check(X, W, V, b, c)
    N, D = X.shape
    a = np.tile(c, (N, 1))
    hs = np.empty((D, N, c.shape[0]), dtype=W.dtype)
    L = np.empty((N, D), dtype=W.dtype)
    for d in range(D):
        hs[d] = sigmoid(a)  # [eq:nade-forward]
        L[:, d] = hs[d] @ V[d] + b[d]
        a += np.outer(X[:, d], W[d])  # [eq:nade-running]
    value, cache = bernoulli_nll_forward(L, X)
    dL = bernoulli_nll_backward(np.full(N, 1.0 / N, dtype=W.dtype), cache)  # dLoss/dl, (N, D)
    dW, dV = np.zeros_like(W), np.zeros_like(V)
    acc = np.zeros_like(a)  # sum over d' > d of dLoss/da_d', (N, H)
    for d in range(D - 1, -1, -1):
        h = hs[d]
        dV[d] = dL[:, d] @ h
        dW[d] = X[:, d] @ acc  # [eq:nade-backward]
        acc += np.outer(dL[:, d], V[d]) * h * (1 - h)  # [eq:nade-backward]
    return float(np.mean(value, dtype=np.float64)), {"W": dW, "V": dV, "b": dL.sum(axis=0), "c": acc.sum(axis=0)}


def nade_sample(U, W, V, b, c) -> np.ndarray:
    """Ancestral samples in D steps from uniforms ``U`` (n, D): :math:`x_d = [u_d < p(x_d=1\\mid x_{<d})]`."""
    U, W, V, b, c = _check(U, W, V, b, c)
    out = np.empty_like(U)
    _sample_kernel(U, W, V, b, c, W.dtype.type(1), out)
    return out


def nade_sample_reference(U, W, V, b, c) -> np.ndarray:
    """NumPy twin of :func:`nade_sample`, vectorised over the n samples."""
    U, W, V, b, c = _check(U, W, V, b, c)
    n, D = U.shape
    a = np.tile(c, (n, 1))
    out = np.empty_like(U)
    for d in range(D):
        p = sigmoid(sigmoid(a) @ V[d] + b[d])  # [eq:nade-forward]
        out[:, d] = U[:, d] < p
        a += np.outer(out[:, d], W[d])  # [eq:nade-running]
    return out


class _Buffers:
    """One thread's buffers: E (G, D, H), logits (G, D), the running sum (H,) and gradient sums."""

    def __init__(self, D, H, dtype, rows):
        G = _group(D, H, rows)
        self.E = np.empty((G, D, H), dtype=dtype)
        self.L = np.empty((G, D), dtype=dtype)
        self.acc = np.empty(H, dtype=dtype)
        self.grads = {"W": np.zeros((D, H), dtype), "V": np.zeros((D, H), dtype), "b": np.zeros(D, dtype),
                      "c": np.zeros(H, dtype)}

    def zero_grads(self):
        for g in self.grads.values():
            g.fill(0)
        return self.grads


class _Workspace:
    """Per-thread buffers reused between training steps (no large allocation per step)."""

    def __init__(self, D, H, dtype):
        self.D, self.H, self.dtype = D, H, np.dtype(dtype)
        self._parts = []

    def parts(self, T, rows):
        """At least ``T`` buffer sets, each able to take ``rows`` examples per kernel call (or a cache-sized group)."""
        G = _group(self.D, self.H, rows)
        if len(self._parts) < T or any(p.E.shape[0] < G for p in self._parts[:T]):
            self._parts = [_Buffers(self.D, self.H, self.dtype, rows) for _ in range(max(T, len(self._parts)))]
        return self._parts[:T]


# --------------------------------------------------------------------------- estimator
class NADE(BinaryAutoregressive):
    """Neural autoregressive distribution estimator with tied input weights ``[eq:nade-forward]``.

    Parameters
    ----------
    n_hidden : int
        :math:`H`, the hidden units shared by all :math:`D` conditionals.
    rng : None, int or numpy.random.Generator
        Initial weights (Glorot-uniform ``W`` and ``V``, zero ``c``), shuffling, sampling.
    dtype : float32 or float64

    Attributes
    ----------
    n_features_in_ : int
    history_ : dict
    n_parameters_ : int
        :math:`2DH + D + H` ``[eq:param-counts]``.

    Notes
    -----
    Parameters: ``W`` (D, H) input weights (row :math:`d` is the paper's
    :math:`W_{:,d}`), ``V`` (D, H) output weights, ``b`` (D,) output biases,
    ``c`` (H,) hidden biases.  :meth:`score_samples` is exact:
    :math:`\\log p(x) = \\sum_d x_d\\ell_d - \\operatorname{softplus}(\\ell_d)`.
    """

    def __init__(self, n_hidden=500, rng=None, dtype=np.float64):
        super().__init__(rng=rng, dtype=dtype)
        self.n_hidden = check_positive_int(n_hidden, "n_hidden")
        self._work = None

    def _config_extra(self):
        return {"n_hidden": self.n_hidden}

    def _init_params(self, D, rng):
        H = self.n_hidden
        W = glorot_uniform(D, H, rng)
        V = glorot_uniform(D, H, rng)
        return {"W": W, "V": V, "b": np.zeros(D), "c": np.zeros(H)}

    def _args(self):
        p = self._params
        return p["W"], p["V"], p["b"], p["c"]

    def _logits(self, X):
        return nade_logits(X, *self._args())

    def _loss_and_grads(self, X):
        D, H = self.n_features_in_, self.n_hidden
        work = self._work
        if work is None or (work.D, work.H, work.dtype) != (D, H, self.dtype):
            work = self._work = _Workspace(D, H, self.dtype)
        return nade_loss_and_grads(X, *self._args(), _work=work)

    def _sample(self, U):
        return nade_sample(U, *self._args())
