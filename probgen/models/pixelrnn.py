"""Pixel RNN: one LSTM layer over the raster sequence of pixels, hand-written backward through time.

:math:`p(x) = \\prod_t p(x_t \\mid x_{<t})` over the :math:`T = HW` pixels in raster order
``[eq:pixelrnn-factorisation]``.  Step :math:`t` of the LSTM reads the *previous* pixel
:math:`z_t = e(x_{t-1})` (a learned start vector :math:`z_0 = s` at :math:`t = 0`), updates
its state ``[eq:lstm-gates]`` ``[eq:lstm-cell]``, and the logits of pixel :math:`t` are
:math:`\\ell_t = h_t V + \\beta` ``[eq:pixelrnn-output]``; :math:`h_t` has seen :math:`x_{<t}` only, so
the model is causal by construction.  Derivations in ``docs/pixelrnn.md``.

Input encoding :math:`e`: binary images (``levels=2``) feed the pixel value itself (one number
in {0, 1}); grey levels feed a one-hot vector of length ``levels`` (no order imposed on the
levels).  This is the simple "LSTM over the pixel sequence" of the source notes, *not* the
Row LSTM or Diagonal BiLSTM of van den Oord et al. (2016).

All arrays are time-major, (T, N, ...): the input projection of every step is one GEMM, the
recurrence forward and backward is a Python loop over :math:`t` of batched NumPy operations
(:func:`lstm_forward`, :func:`lstm_step`, :func:`lstm_backward`), and the output layer and the
weight gradients are GEMMs over all steps at once.  A serial Numba loop was measured and was not
faster: its scalar ``exp``/``tanh`` cost more than the per-step overhead it saves (see
``docs/pixelrnn.md``).  Cost :math:`O(HW\\,H_{\\text{hid}}^2)` per image for the likelihood, for
its gradient [eq:lstm-backward] and for sampling alike, but always as :math:`HW` sequential steps
(no parallelism over pixels, unlike PixelCNN's one-pass likelihood).

Parameters (dotted names): ``lstm.W`` (I, 4H) input weights, ``lstm.U`` (H, 4H) recurrent
weights, ``lstm.b`` (4H,) biases, gate blocks in the order i, f, o, g; ``lstm.start`` (I,)
the input of step 0; ``out.W`` (H, K), ``out.b`` (K,) with K = 1 (Bernoulli logit) or
``levels`` (softmax logits).
"""
from __future__ import annotations

import numpy as np

from .._validation import check_dtype, check_positive_int, check_rng
from ..nn.functional import sigmoid
from ..nn.init import glorot_uniform
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward, categorical_nll_backward, categorical_nll_forward
from ._image import ImageAutoregressive, draw_pixel
from .pixelcnn import _check_image_shape

__all__ = ["PixelRNN", "lstm_forward", "lstm_backward", "lstm_step", "pixelrnn_inputs", "pixelrnn_loss_and_grads"]

_EVAL_CHUNK = 256  # images per pass when scoring or sampling


# ----------------------------------------------------------------------------- the LSTM
def lstm_forward(Z, W, U, b):
    """One LSTM layer over a sequence, zero initial state, and the tape for :func:`lstm_backward`.

    Parameters
    ----------
    Z : ndarray of shape (T, N, I)
        Inputs :math:`z_t`, time-major.
    W : ndarray of shape (I, 4H)
    U : ndarray of shape (H, 4H)
    b : ndarray of shape (4H,)
        Gate blocks in the order i, f, o, g.

    Returns
    -------
    Hs : ndarray of shape (T, N, H)
        Hidden states :math:`h_0 .. h_{T-1}`; :math:`h_t` depends on :math:`z_{\\le t}` only.
    tape : tuple
        ``(Z, W, U, G, C, TC, Hs)``: gate activations (T, N, 4H), cells (T, N, H), tanh of the cells.
    """
    T, N, _ = Z.shape
    H = U.shape[0]
    G = Z.reshape(T * N, -1) @ W  # input part of every pre-activation in one GEMM
    G = G.reshape(T, N, 4 * H)
    G += b
    C = np.empty((T, N, H), Z.dtype)
    TC = np.empty_like(C)
    Hs = np.empty_like(C)
    h = np.zeros((N, H), Z.dtype)
    c = np.zeros((N, H), Z.dtype)
    for t in range(T):
        lstm_step(G[t], U, h, c, C[t], TC[t], Hs[t])
        h, c = Hs[t], C[t]
    return Hs, (Z, W, U, G, C, TC, Hs)


def lstm_step(a, U, h, c, c_out, tc_out, h_out):
    """One LSTM step for every row, in place.

    Parameters
    ----------
    a : ndarray of shape (N, 4H)
        :math:`z_t W + b` on entry; the gate activations :math:`i, f, o, g` on exit.
    U : ndarray of shape (H, 4H)
    h, c : ndarray of shape (N, H)
        :math:`h_{t-1}`, :math:`c_{t-1}`.
    c_out, tc_out, h_out : ndarray of shape (N, H)
        Receive :math:`c_t`, :math:`\\tanh c_t`, :math:`h_t` (may be ``c`` and ``h`` themselves).
    """
    H = U.shape[0]
    a += h @ U  # a_t = z_t W + h_{t-1} U + b  [eq:lstm-gates]
    a[:, :3 * H] = sigmoid(a[:, :3 * H])  # i, f, o
    np.tanh(a[:, 3 * H:], out=a[:, 3 * H:])  # g
    i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    np.copyto(c_out, f * c + i * g)  # [eq:lstm-cell]
    np.tanh(c_out, out=tc_out)
    np.multiply(o, tc_out, out=h_out)  # h_t = o_t * tanh(c_t)  [eq:lstm-cell]


def lstm_backward(dHs, tape):
    """Backward through time of :func:`lstm_forward` ``[eq:lstm-backward]``.

    Parameters
    ----------
    dHs : ndarray of shape (T, N, H)
        :math:`\\partial L/\\partial h_t` from the output layer only (not through the recurrence).
    tape : tuple

    Returns
    -------
    dZ0 : ndarray of shape (N, I)
        :math:`\\partial L/\\partial z_0` (the start input's gradient, per image).
    dW : ndarray of shape (I, 4H)
    dU : ndarray of shape (H, 4H)
    db : ndarray of shape (4H,)
    """
    Z, W, U, G, C, TC, Hs = tape
    T, N, H = Hs.shape
    if dHs.shape != Hs.shape:
        raise ValueError(f"dHs must have shape {Hs.shape}, got {dHs.shape}")
    dA = np.empty_like(G)  # dL/da_t, the gate pre-activations
    UT = np.ascontiguousarray(U.T)
    dh = np.zeros((N, H), Hs.dtype)  # dL/dh_t through h_{t+1}'s gates
    dc = np.zeros((N, H), Hs.dtype)  # dL/dc_t through c_{t+1}
    for t in range(T - 1, -1, -1):
        g_t = G[t]
        i, f, o, g = g_t[:, :H], g_t[:, H:2 * H], g_t[:, 2 * H:3 * H], g_t[:, 3 * H:]
        dh += dHs[t]
        tc = TC[t]
        dc += dh * o * (1 - tc * tc)  # [eq:lstm-backward]
        d = dA[t]
        c_prev = C[t - 1] if t > 0 else 0
        d[:, :H] = dc * g * i * (1 - i)  # dL/da^i
        d[:, H:2 * H] = dc * c_prev * f * (1 - f)  # dL/da^f
        d[:, 2 * H:3 * H] = dh * tc * o * (1 - o)  # dL/da^o
        d[:, 3 * H:] = dc * i * (1 - g * g)  # dL/da^g  [eq:lstm-backward]
        dc *= f  # dL/dc_{t-1} (direct path)
        if t > 0:
            dh = d @ UT  # dL/dh_{t-1} through a_t  [eq:lstm-backward]
    dA2 = dA.reshape(T * N, -1)
    dU = Hs[:-1].reshape((T - 1) * N, H).T @ dA2[N:]  # sum_t h_{t-1}^T dL/da_t, one GEMM
    dW = Z.reshape(T * N, -1).T @ dA2
    db = dA2.sum(axis=0)
    return dA[0] @ W.T, dW, dU, db


# ----------------------------------------------------------------------------- the model's maths
def pixelrnn_inputs(X, start, levels):
    """Time-major LSTM inputs :math:`z_t` of images ``X`` (N, H, W): shape (T, N, I).

    :math:`z_0 = s` (``start``), :math:`z_t = e(x_{t-1})` with :math:`e(x) = x` for
    ``levels=2`` (I = 1) and the one-hot vector of :math:`x` otherwise (I = ``levels``).
    """
    N = X.shape[0]
    x = X.reshape(N, -1).T  # (T, N)
    T, dt = x.shape[0], start.dtype
    if levels == 2:
        Z = np.empty((T, N, 1), dt)
        Z[1:, :, 0] = x[:-1]
    else:
        Z = np.zeros((T, N, levels), dt)
        np.put_along_axis(Z[1:], x[:-1, :, None].astype(np.intp), 1, axis=2)
    Z[0] = start
    return Z


def _logits_and_tape(params, X, levels):
    """Logits (T, N, K) and the LSTM tape."""
    Z = pixelrnn_inputs(X, params["lstm.start"], levels)
    Hs, tape = lstm_forward(Z, params["lstm.W"], params["lstm.U"], params["lstm.b"])
    T, N, H = Hs.shape
    logits = (Hs.reshape(T * N, H) @ params["out.W"]).reshape(T, N, -1)
    logits += params["out.b"]  # [eq:pixelrnn-output]
    return logits, tape


def _nll(logits, X, levels):
    """Per-image NLL (N,) and the loss cache, from time-major logits (T, N, K)."""
    N = X.shape[0]
    if levels == 2:
        return bernoulli_nll_forward(np.ascontiguousarray(logits[:, :, 0].T), X.reshape(N, -1))  # [eq:pixelrnn-nll]
    per_pixel, cache = categorical_nll_forward(logits.transpose(1, 0, 2), X.reshape(N, -1))  # [eq:pixelrnn-nll]
    return per_pixel.sum(axis=1), cache


def pixelrnn_loss_and_grads(params, X, levels):
    """Mean NLL of images ``X`` (N, H, W) (valid ints) and the gradients of every parameter.

    Returns
    -------
    loss : float
        :math:`-\\frac1N\\sum_n \\log p(x_n)` in nats ``[eq:pixelrnn-nll]``.
    grads : dict {name: ndarray}
        Keys of ``params``, their shapes and dtype.
    """
    logits, tape = _logits_and_tape(params, X, levels)
    T, N, K = logits.shape
    value, cache = _nll(logits, X, levels)
    dvalue = np.full(N, 1.0 / N, logits.dtype)
    if levels == 2:
        d_logits = bernoulli_nll_backward(dvalue, cache).T[:, :, None]  # (T, N, 1)
    else:
        dv = np.broadcast_to(dvalue[:, None], (N, T)).copy()
        d_logits = categorical_nll_backward(dv, cache).transpose(1, 0, 2)  # (T, N, K)
    d2 = np.ascontiguousarray(d_logits).reshape(T * N, K)
    Hs = tape[-1]
    H = Hs.shape[2]
    d_out_W = Hs.reshape(T * N, H).T @ d2  # [eq:pixelrnn-output]
    d_out_b = d2.sum(axis=0)
    dHs = (d2 @ params["out.W"].T).reshape(T, N, H)
    dZ0, dW, dU, db = lstm_backward(dHs, tape)  # [eq:lstm-backward]
    grads = {"lstm.W": dW, "lstm.U": dU, "lstm.b": db, "lstm.start": dZ0.sum(axis=0),
             "out.W": d_out_W, "out.b": d_out_b}
    return float(np.mean(value, dtype=np.float64)), grads


# ----------------------------------------------------------------------------- the estimator
class PixelRNN(ImageAutoregressive):
    """Autoregressive image model: an LSTM over the raster pixel sequence, exact log-likelihood.

    Parameters
    ----------
    image_shape : (int, int)
        :math:`(H, W)`; images are (N, H, W) arrays of integers in ``0 .. levels-1``.
    hidden : int
        :math:`H_{hid}`, the LSTM's state size.
    levels : int in [2, 256]
        2: binary images, input the previous pixel's value, one Bernoulli logit per pixel;
        more: input the previous pixel one-hot, a ``levels``-way softmax per pixel.
    rng : None, int or numpy.random.Generator
        Initial weights, then shuffling in ``fit`` and the default generator of ``sample``.
    dtype : float32 or float64

    Attributes
    ----------
    history_ : dict of lists
        ``epoch``, ``train_nll`` (nats per image), ``lr``, ``validation_nll`` with ``validation=``.

    Notes
    -----
    :math:`\\log p(x) = \\sum_t \\log p(x_t \\mid x_{<t})` ``[eq:pixelrnn-factorisation]`` is exact.
    Every evaluation, gradient and sample takes :math:`HW` sequential LSTM steps, each
    :math:`O(H_{hid}^2)` per image.  Initialisation: ``lstm.W``, ``lstm.U`` uniform in
    :math:`\\pm 1/\\sqrt{H_{hid}}` (torch's LSTM default), ``lstm.b`` zero except the forget
    gate's 1, ``lstm.start`` zero, ``out.W`` Glorot-uniform, ``out.b`` zero.
    """

    _score_name = "nll"
    _higher_is_better = False

    def __init__(self, image_shape, hidden=64, levels=2, rng=None, dtype=np.float64):
        self.image_shape = _check_image_shape(image_shape)
        self.hidden = check_positive_int(hidden, "hidden")
        self.levels = check_positive_int(levels, "levels", minimum=2)
        if self.levels > 256:
            raise ValueError(f"levels must be <= 256, got {self.levels}")
        check_rng(rng)  # type check only; the generator is made in build()
        self.rng = rng
        self.dtype = check_dtype(dtype)
        self.history_ = None
        self._params = None

    # ------------------------------------------------------------------ structure
    def _config(self) -> dict:
        return {"image_shape": list(self.image_shape), "hidden": self.hidden, "levels": self.levels,
                "dtype": self.dtype.name}

    def build(self):
        """Fresh parameters (see the class Notes); returns ``self``."""
        self._rng = rng = check_rng(self.rng)
        H, L = self.hidden, self.levels
        I = 1 if L == 2 else L
        K = 1 if L == 2 else L
        a = 1.0 / np.sqrt(H)
        b = np.zeros(4 * H)
        b[H:2 * H] = 1.0  # forget-gate bias 1
        params = {"lstm.W": rng.uniform(-a, a, (I, 4 * H)), "lstm.U": rng.uniform(-a, a, (H, 4 * H)),
                  "lstm.b": b, "lstm.start": np.zeros(I), "out.W": glorot_uniform(H, K, rng), "out.b": np.zeros(K)}
        self._params = {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in params.items()}
        return self

    # ------------------------------------------------------------------ the seam
    def _loss_and_grads(self, X, copy=True):
        """Mean NLL ``[eq:pixelrnn-nll]`` of checked images and its gradients (fresh arrays either way)."""
        return pixelrnn_loss_and_grads(self._params, X, self.levels)

    # ------------------------------------------------------------------ evaluation
    def _log_prob(self, X):
        out = np.empty(X.shape[0], self.dtype)
        for s in range(0, X.shape[0], _EVAL_CHUNK):
            Xc = X[s:s + _EVAL_CHUNK]
            logits, _ = _logits_and_tape(self._params, Xc, self.levels)
            out[s:s + _EVAL_CHUNK] = -_nll(logits, Xc, self.levels)[0]
        return out

    def conditional_logits(self, X):
        """Logits of :math:`p(x_t \\mid x_{<t})` at every pixel.

        Returns
        -------
        ndarray of shape (N, H, W) for ``levels=2`` (:math:`p(x_t = 1) = \\sigma(\\ell_t)`), or
        (N, H, W, levels) otherwise (softmax over the last axis).
        """
        self._check_built()
        X = self._check_X(X)
        logits, _ = _logits_and_tape(self._params, X, self.levels)
        out = logits.transpose(1, 0, 2).reshape(X.shape + (-1,))
        return np.ascontiguousarray(out[..., 0] if self.levels == 2 else out)

    def sample(self, n, rng=None):
        """Draw ``n`` images pixel by pixel in raster order: :math:`HW` sequential LSTM steps.

        Parameters
        ----------
        n : int
        rng : None, int or numpy.random.Generator
            Default: the model's own generator.

        Returns
        -------
        ndarray of shape (n, H, W), uint8 values in ``0 .. levels-1``.
        """
        self._check_built()
        n = check_positive_int(n, "n")
        gen = self._rng if rng is None else check_rng(rng)
        T = self.image_shape[0] * self.image_shape[1]
        Uni = gen.random((n, T))  # x_t is a deterministic function of u_t and x_{<t}
        P, L, Hd = self._params, self.levels, self.hidden
        X = np.zeros((n, T), np.uint8)
        for s in range(0, n, _EVAL_CHUNK):
            m = min(_EVAL_CHUNK, n - s)
            h = np.zeros((m, Hd), self.dtype)
            c = np.zeros((m, Hd), self.dtype)
            tc = np.empty_like(c)
            x = None
            for t in range(T):
                if t == 0:
                    a = np.tile(P["lstm.start"] @ P["lstm.W"] + P["lstm.b"], (m, 1))  # z_0 W + b
                elif L == 2:
                    a = np.outer(x.astype(self.dtype), P["lstm.W"][0]) + P["lstm.b"]  # z_t = x_{t-1}
                else:
                    a = P["lstm.W"][x] + P["lstm.b"]  # z_t = onehot(x_{t-1})
                lstm_step(a, P["lstm.U"], h, c, c, tc, h)  # h, c <- h_t, c_t  [eq:lstm-gates] [eq:lstm-cell]
                logits = (h @ P["out.W"] + P["out.b"]).astype(np.float64)  # [eq:pixelrnn-output]
                x = draw_pixel(logits[:, 0] if L == 2 else logits, Uni[s:s + m, t], L)
                X[s:s + m, t] = x
        return X.reshape((n,) + self.image_shape)
