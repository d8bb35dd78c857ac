"""PixelCNN (van den Oord et al., 2016): an autoregressive image model of masked convolutions.

:math:`p(x) = \\prod_t p(x_t \\mid x_{<t})` over the pixels in raster order
``[eq:pixelcnn-factorisation]``; every conditional comes out of one pass of a network whose
masked convolutions (:mod:`probgen.kernels.masked_conv`) let pixel :math:`t` see only
:math:`x_{<t}`.  Derivations in ``docs/pixelcnn.md``.

Network (``[eq:pixelcnn-residual]``), all activations in the channels-outermost (C, N, H, W)
layout (every convolution is then one GEMM per chunk of images), with :math:`C` = ``channels``,
:math:`h = \\max(1, C/2)`:

* ``input``: mask-A ``first_kernel_size`` convolution, 1 -> C, of the scaled image
  :math:`2x/(L-1) - 1 \\in [-1, 1]`;
* ``res0`` ... ``res{n_layers-1}``: residual blocks as in the PixelRNN paper (Fig. 5),
  :math:`H \\leftarrow H + \\mathrm{conv}^{1\\times1}_{h\\to C}(\\mathrm{ReLU}(\\mathrm{conv}^{B,k}_{h\\to h}
  (\\mathrm{ReLU}(\\mathrm{conv}^{1\\times1}_{C\\to h}(\\mathrm{ReLU}(H))))))`;
* ``out1``, ``out2``: ReLU, 1x1 (C -> C), ReLU, 1x1 (C -> 1 logit for ``levels=2``, else C ->
  ``levels`` logits of a softmax).

A 1x1 convolution is a mask-B convolution with :math:`k=1`, so it is causal too.  Parameters
are named ``<layer>.W`` (packed causal taps, shape (C_out, C_in, T)) and ``<layer>.b``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validation import check_dtype, check_positive_int, check_rng
from ..kernels.masked_conv import MaskedConvWorkspace, masked_conv2d_backward, masked_conv2d_forward, n_causal_taps
from ..nn.init import he_normal
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward, categorical_nll_backward, categorical_nll_forward
from ._image import ImageAutoregressive, draw_pixel

__all__ = ["PixelCNN", "network_forward", "network_backward", "layer_specs"]

_EVAL_CHUNK = 64  # images per forward pass when scoring or sampling


# ----------------------------------------------------------------------------- the network
def layer_specs(channels, n_layers, kernel_size, first_kernel_size, levels):
    """``[(name, C_in, C_out, kernel_size, mask_type)]`` in forward order."""
    C, h = channels, max(1, channels // 2)
    specs = [("input", 1, C, first_kernel_size, "A")]
    for l in range(n_layers):
        specs += [(f"res{l}.in", C, h, 1, "B"), (f"res{l}.conv", h, h, kernel_size, "B"),
                  (f"res{l}.out", h, C, 1, "B")]
    specs += [("out1", C, C, 1, "B"), ("out2", C, 1 if levels == 2 else levels, 1, "B")]
    return specs


@njit(cache=True, error_model="numpy", fastmath=False)
def _relu_backward_(d, y):  # pragma: no cover - compiled
    """In place: ``d *= (y > 0)`` for the ReLU output ``y`` (0 at the kink, as torch) ``[eq:relu]``.

    One fused pass with no temporary (the NumPy form allocates a boolean mask per call).
    """
    d1 = d.reshape(-1)
    y1 = y.reshape(-1)
    for i in range(d1.size):
        d1[i] = d1[i] if y1[i] > 0 else 0  # a select, so the loop vectorises


def network_forward(params, x, n_layers, ws):
    """Logits of every pixel's conditional, and the tape for :func:`network_backward`.

    Parameters
    ----------
    params : dict {name: ndarray}
    x : ndarray of shape (1, N, H, W)
        The scaled images (channels-outermost "CNHW" layout, as every activation here).
    n_layers : int
    ws : dict {layer name: MaskedConvWorkspace}

    Returns
    -------
    logits : ndarray of shape (K, N, H, W)
        K = 1 (Bernoulli) or ``levels``; the logits at pixel :math:`t` depend on
        :math:`x_{<t}` only.  A workspace buffer.
    tape : dict
    """
    tape = {}

    def conv(name, inp, mask):
        y, tape[name] = masked_conv2d_forward(inp, params[name + ".W"], params[name + ".b"], mask,
                                              workspace=ws[name], layout="CNHW")
        return y

    H = conv("input", x, "A")  # the residual stream, updated in place
    for l in range(n_layers):
        p = f"res{l}"
        a = ws[p + ".in"].get("relu_in", H.shape, H.dtype)
        np.maximum(H, 0, out=a)
        u = conv(p + ".in", a, "B")
        np.maximum(u, 0, out=u)
        v = conv(p + ".conv", u, "B")
        np.maximum(v, 0, out=v)
        H += conv(p + ".out", v, "B")  # [eq:pixelcnn-residual]
        tape[p] = (a, u, v)
    a = ws["out1"].get("relu_in", H.shape, H.dtype)
    np.maximum(H, 0, out=a)
    o = conv("out1", a, "B")
    np.maximum(o, 0, out=o)
    logits = conv("out2", o, "B")
    tape["head"] = (a, o)
    return logits, tape


def network_backward(d_logits, tape, n_layers, grads):
    """Backward of :func:`network_forward` by the chain rule in reverse layer order.

    Writes every parameter's gradient into ``grads`` (same keys as ``params``).
    """
    def back(name, dy, need_dx=True):
        dx, dW, db = masked_conv2d_backward(dy, tape[name], need_dx=need_dx)
        np.copyto(grads[name + ".W"], dW)
        np.copyto(grads[name + ".b"], db)
        return dx

    a, o = tape["head"]
    d_o = back("out2", d_logits)
    _relu_backward_(d_o, o)
    d_a = back("out1", d_o)
    _relu_backward_(d_a, a)
    dH = d_a  # gradient of the residual stream
    for l in reversed(range(n_layers)):
        p = f"res{l}"
        a, u, v = tape[p]
        d_v = back(p + ".out", dH)  # the skip passes dH through unchanged  [eq:pixelcnn-residual]
        _relu_backward_(d_v, v)
        d_u = back(p + ".conv", d_v)
        _relu_backward_(d_u, u)
        d_a = back(p + ".in", d_u)
        _relu_backward_(d_a, a)
        dH += d_a
    back("input", dH, need_dx=False)


# ----------------------------------------------------------------------------- the estimator
def _check_image_shape(image_shape):
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2:
        raise TypeError(f"image_shape must be a pair (H, W), got {image_shape!r}")
    return tuple(check_positive_int(s, "image_shape[i]") for s in image_shape)


def _odd(value, name, minimum=1):
    k = check_positive_int(value, name, minimum=minimum)
    if k % 2 == 0:
        raise ValueError(f"{name} must be odd (masks are centred), got {k}")
    return k


class PixelCNN(ImageAutoregressive):
    """Autoregressive image model of masked convolutions with exact log-likelihood.

    Parameters
    ----------
    image_shape : (int, int)
        :math:`(H, W)`; images are (N, H, W) arrays of integers in ``0 .. levels-1``.
    channels : int
        :math:`C`, width of the residual stream (blocks work at :math:`h = \\max(1, C/2)`).
    n_layers : int
        Number of residual blocks (0 allowed: input layer and output head only).
    kernel_size : int, odd
        Mask-B kernel of the blocks.
    first_kernel_size : int, odd, >= 3
        Mask-A kernel of the input layer.
    levels : int in [2, 256]
        2: binary images, one Bernoulli logit per pixel; more: a ``levels``-way softmax
        (17 for the 8x8 digits' grey levels 0..16).
    rng : None, int or numpy.random.Generator
        Initial weights, then the shuffling of ``fit``.
    dtype : float32 or float64

    Attributes
    ----------
    history_ : dict of lists
        ``epoch``, ``train_nll`` (mean over the epoch's minibatches, nats per image), ``lr``,
        ``validation_nll`` with ``validation=``.

    Notes
    -----
    :math:`\\log p(x) = \\sum_t \\log p(x_t \\mid x_{<t})` ``[eq:pixelcnn-factorisation]`` is exact:
    one network pass gives all :math:`HW` conditionals.  Sampling needs :math:`HW` passes.
    """

    _score_name = "nll"
    _higher_is_better = False

    def __init__(self, image_shape, channels=64, n_layers=5, kernel_size=3, first_kernel_size=7, levels=2,
                 rng=None, dtype=np.float64):
        self.image_shape = _check_image_shape(image_shape)
        self.channels = check_positive_int(channels, "channels")
        self.n_layers = check_positive_int(n_layers, "n_layers", minimum=0)
        self.kernel_size = _odd(kernel_size, "kernel_size")
        self.first_kernel_size = _odd(first_kernel_size, "first_kernel_size", minimum=3)
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
        return {"image_shape": list(self.image_shape), "channels": self.channels, "n_layers": self.n_layers,
                "kernel_size": self.kernel_size, "first_kernel_size": self.first_kernel_size,
                "levels": self.levels, "dtype": self.dtype.name}

    def _layers(self):
        return layer_specs(self.channels, self.n_layers, self.kernel_size, self.first_kernel_size, self.levels)

    def build(self):
        """Fresh parameters: He-normal weights over the causal fan-in :math:`C_{in}T`, zero biases."""
        self._rng = check_rng(self.rng)
        self._params, self._ws = {}, {}
        for name, c_in, c_out, k, mask in self._layers():
            T = n_causal_taps(k, mask)
            W = he_normal(c_in * T, c_out, self._rng, self.dtype)  # [eq:he]
            self._params[name + ".W"] = np.ascontiguousarray(W.T).reshape(c_out, c_in, T)
            self._params[name + ".b"] = np.zeros(c_out, self.dtype)
            self._ws[name] = MaskedConvWorkspace()
        self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}
        return self

    # ------------------------------------------------------------------ network input
    def _scaled(self, X):
        """Network input :math:`2x/(L-1) - 1` of shape (1, N, H, W)."""
        x = X.astype(self.dtype)[None]
        x *= 2.0 / (self.levels - 1)
        x -= 1.0
        return x

    # ------------------------------------------------------------------ the seam
    def _loss(self, X, want_grads):
        """Sum over pixels of -log p per image (N,), and the gradients of their mean."""
        N = X.shape[0]
        logits, tape = network_forward(self._params, self._scaled(X), self.n_layers, self._ws)
        dvalue = np.full(N, 1.0 / N, self.dtype)
        if self.levels == 2:
            value, cache = bernoulli_nll_forward(logits.reshape(N, -1), X.reshape(N, -1))  # [eq:pixelcnn-nll]
            if want_grads:
                d_logits = bernoulli_nll_backward(dvalue, cache).reshape(logits.shape)
        else:
            lt = logits.transpose(1, 2, 3, 0)  # (N, H, W, L)
            per_pixel, cache = categorical_nll_forward(lt, X)  # [eq:pixelcnn-nll]
            value = per_pixel.reshape(N, -1).sum(axis=1)
            if want_grads:
                dv = np.broadcast_to(dvalue[:, None, None], X.shape).copy()
                d_logits = np.ascontiguousarray(categorical_nll_backward(dv, cache).transpose(3, 0, 1, 2))
        if want_grads:
            network_backward(d_logits, tape, self.n_layers, self._grads)
        return value

    def loss_and_grads(self, X):
        """Mean negative log-likelihood of ``X`` in nats per image, and its gradients.

        Parameters
        ----------
        X : array_like of shape (N, H, W), integers in ``0 .. levels-1``

        Returns
        -------
        loss : float
            :math:`-\\frac1N \\sum_n \\log p(x_n)` ``[eq:pixelcnn-nll]``.
        grads : dict {name: ndarray}
            Fresh arrays with the keys and shapes of :meth:`named_parameters`.
        """
        self._check_built()
        value = self._loss(self._check_X(X), True)
        return float(np.mean(value, dtype=np.float64)), {k: g.copy() for k, g in self._grads.items()}

    def _batch_step(self, Xb, rng, beta):
        value = self._loss(Xb.reshape((-1,) + self.image_shape), True)
        return float(np.mean(value, dtype=np.float64)), self._grads

    # ------------------------------------------------------------------ evaluation
    def _logits(self, X):
        """Copy of the network's logits, (K, N, H, W)."""
        out = None
        for s in range(0, X.shape[0], _EVAL_CHUNK):
            logits, _ = network_forward(self._params, self._scaled(X[s:s + _EVAL_CHUNK]), self.n_layers, self._ws)
            if out is None:
                out = np.empty((logits.shape[0], X.shape[0]) + logits.shape[2:], self.dtype)
            out[:, s:s + _EVAL_CHUNK] = logits
        return out

    def _log_prob(self, X):
        out = np.empty(X.shape[0], self.dtype)
        for s in range(0, X.shape[0], _EVAL_CHUNK):
            out[s:s + _EVAL_CHUNK] = -self._loss(X[s:s + _EVAL_CHUNK], False)
        return out

    def conditional_logits(self, X):
        """Logits of :math:`p(x_t \\mid x_{<t})` at every pixel.

        Returns
        -------
        ndarray of shape (N, H, W) for ``levels=2`` (:math:`p(x_t = 1) = \\sigma(\\ell_t)`), or
        (N, H, W, levels) otherwise (softmax over the last axis).
        """
        self._check_built()
        logits = self._logits(self._check_X(X))
        return logits[0] if self.levels == 2 else np.ascontiguousarray(logits.transpose(1, 2, 3, 0))

    def sample(self, n, rng=None):
        """Draw ``n`` images pixel by pixel in raster order: :math:`HW` network passes.

        Returns
        -------
        ndarray of shape (n, H, W), uint8 values in ``0 .. levels-1``.
        """
        self._check_built()
        n = check_positive_int(n, "n")
        rng = check_rng(rng)
        H, W = self.image_shape
        X = np.zeros((n, H, W), np.uint8)
        for s in range(0, n, _EVAL_CHUNK):
            Xc = X[s:s + _EVAL_CHUNK]
            for i in range(H):
                for j in range(W):
                    logits, _ = network_forward(self._params, self._scaled(Xc), self.n_layers, self._ws)
                    u = rng.random(Xc.shape[0])
                    row = logits[0, :, i, j] if self.levels == 2 else logits[:, :, i, j].T
                    Xc[:, i, j] = draw_pixel(row, u, self.levels)
        return X
