"""PixelCNN (van den Oord et al., 2016): an autoregressive image model of masked convolutions.

:math:`p(x) = \\prod_t p(x_t \\mid x_{<t})` over the pixels in raster order
``[eq:pixelcnn-factorisation]``; every conditional comes out of one pass of a network whose
masked convolutions (:mod:`probgen.kernels.masked_conv`) let pixel :math:`t` see only
:math:`x_{<t}`.  Derivations in ``docs/pixelcnn.md``.

Network (``[eq:pixelcnn-residual]``), with :math:`C` = ``channels``, :math:`h = \\max(1, C/2)`:

* ``input``: mask-A ``first_kernel_size`` convolution, 1 -> C, of the scaled image
  :math:`2x/(L-1) - 1 \\in [-1, 1]`;
* ``res0`` ... ``res{n_layers-1}``: residual blocks as in the PixelRNN paper (Fig. 5),
  :math:`H \\leftarrow H + \\mathrm{conv}^{1\\times1}_{h\\to C}(\\mathrm{ReLU}(\\mathrm{conv}^{B,k}_{h\\to h}
  (\\mathrm{ReLU}(\\mathrm{conv}^{1\\times1}_{C\\to h}(\\mathrm{ReLU}(H))))))`;
* ``out1``, ``out2``: ReLU, 1x1 (C -> C), ReLU, 1x1 (C -> 1 logit for ``levels=2``, else C ->
  ``levels`` logits of a softmax).

A 1x1 convolution is a mask-B convolution with :math:`k=1`, so it is causal too.  Parameters
are named ``<layer>.W`` (packed causal taps, shape (C_out, C_in, T)) and ``<layer>.b``.

Computation: activations are channels-outermost (C, N, H, W), and the whole network runs one chunk
of images at a time (one 28x28 image at C = 64), so a chunk's activations, gathers and gradients stay
in L2 and only the activations the backward pass needs are written out.  With several BLAS threads
the batch is split into that many contiguous image ranges, each run chunk by chunk on a thread of
our own while BLAS runs at one thread (every compiled kernel releases the GIL; the weight gradients
are summed over the ranges): GEMMs that small gain little from BLAS's own threads, which also
synchronise once per call.  Biases ride on a ones row of each layer's input, so they cost
no pass of their own and their gradients come out of the weight-gradient GEMMs.  The residual blocks'
3x3 layers run Winograd's F(2,3) + F(2,2) (:mod:`probgen.kernels._winograd`, ``[eq:winograd-f23]``)
when they have at least 16 channels and the width is even, and gather otherwise.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_dtype, check_positive_int, check_rng
from ..kernels import _winograd as wino
from ..kernels._masked_conv_kernels import (
    accumulate_dw,
    col2im,
    dw_transposed,
    forward_product,
    im2col,
    relu_,
    relu_grad_,
    relu_grad_add_,
    residual_relu_,
)
from ..kernels._threads import blas_threads, run_ranges, split_ranges
from ..kernels.masked_conv import (
    MaskedConvWorkspace,
    _winograd_applies,
    causal_taps,
    kernel_size_from_taps,
    n_causal_taps,
)
from ..nn.init import he_normal
from ..nn.losses import bernoulli_nll_backward, bernoulli_nll_forward, categorical_nll_backward, categorical_nll_forward
from ._image import ImageAutoregressive, draw_pixel

__all__ = ["PixelCNN", "network_forward", "network_backward", "layer_specs"]

_EVAL_CHUNK = 64  # images per forward pass when scoring or sampling
_CHUNK_BYTES = 1 << 18  # images per chunk of the network: one 28x28 image at C = 64 in float32 (256 KiB)


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


def _workers(N):
    """Threads of our own for a batch of N images: BLAS's thread count (capped at N), 1 with one BLAS thread."""
    return max(1, min(N, blas_threads()))


def _images_per_chunk(N, C, HW, itemsize):
    """Images per chunk: the residual stream of a chunk takes about ``_CHUNK_BYTES``."""
    return int(min(N, max(1, _CHUNK_BYTES // (C * HW * itemsize))))


def _with_bias(params, name):
    """``[W | b]``, (C_out, C_in T + 1): the bias multiplies the ones row at the end of the layer's input."""
    W, b = params[name + ".W"], params[name + ".b"]
    Wb = np.empty((W.shape[0], W.shape[1] * W.shape[2] + 1), W.dtype)
    Wb[:, :-1] = W.reshape(W.shape[0], -1)
    Wb[:, -1] = b
    return Wb


def network_forward(params, x, n_layers, ws):
    """Logits of every pixel's conditional, and the tape for :func:`network_backward`.

    Parameters
    ----------
    params : dict {name: ndarray}
    x : ndarray of shape (1, N, H, W)
        The scaled images (channels-outermost "CNHW" layout, as every activation here).
    n_layers : int
    ws : dict {layer name: MaskedConvWorkspace}
        Buffers, reused from call to call.

    Returns
    -------
    logits : ndarray of shape (K, N, H, W)
        K = 1 (Bernoulli) or ``levels``; the logits at pixel :math:`t` depend on
        :math:`x_{<t}` only.  A workspace buffer.
    tape : dict
    """
    return _forward(params, x, n_layers, ws, keep=True)


def _forward(params, x, n_layers, ws, keep):
    """:func:`network_forward`, image chunk by image chunk; ``keep=False`` saves no activations (evaluation).

    Every activation is a (channels, columns) array, a column being one pixel of one image.  The
    input of a 1x1 layer carries a ones row for its bias; the residual stream :math:`H` of a chunk
    never leaves the chunk's buffer (only :math:`\\mathrm{ReLU}(H)` is needed later).
    """
    _, N, H, Wd = x.shape
    HW, dt = H * Wd, x.dtype
    C, _, T1 = params["input.W"].shape
    h = params["res0.in.W"].shape[0] if n_layers else 0
    ranges = split_ranges(N, _workers(N))
    m = _images_per_chunk(N, C, HW, dt.itemsize)

    def buf(layer, key, rows, ones=False, width=N * HW):
        a = ws[layer].get(key, (rows + ones, width), dt)
        if ones:
            a[rows] = 1
        return a

    def activations(sfx, width):  # ReLU(H_l) with a ones row, the blocks' U and V, the output layer's input
        A = [buf(f"res{l}.in", "x" + sfx, C, True, width) for l in range(n_layers)]
        A.append(buf("out1", "x" + sfx, C, True, width))
        U = [buf(f"res{l}.conv", "x" + sfx, h, False, width) for l in range(n_layers)]
        V = [buf(f"res{l}.out", "x" + sfx, h, True, width) for l in range(n_layers)]
        return A, U, V, buf("out2", "x" + sfx, C, True, width)

    saved = activations("", N * HW) if keep else None  # evaluation keeps only each worker's current chunk
    Wb = {k[:-2]: _with_bias(params, k[:-2]) for k in params if k.endswith(".W")}
    K = Wb["out2"].shape[0]
    logits = ws["out2"].get("y", (K, N, H, Wd), dt)
    taps1 = causal_taps(kernel_size_from_taps(T1, "A"), "A")
    T3 = params["res0.conv.W"].shape[2] if n_layers else 0
    taps3 = causal_taps(kernel_size_from_taps(T3, "B"), "B") if n_layers else None
    UW = _winograd_weights(params, n_layers, Wd)  # the 3x3 layers by Winograd's F(2,3) + F(2,2), or None
    x3, y2 = x.reshape(1, N, HW), logits.reshape(K, N * HW)

    def job(lo, hi, worker):  # images lo..hi-1, chunk by chunk, with this worker's scratch
        A, U, V, O = saved if keep else activations(f"_eval{worker}", m * HW)
        cols1 = buf("input", f"cols{worker}", T1, True, m * HW).reshape(T1 + 1, m, HW)
        cols3 = Vw = Mw = None
        if UW is not None:
            Vw, Mw = _winograd_buffers(ws, worker, h, m * HW // 2, dt)
        elif n_layers:
            cols3 = buf("res0.conv", f"cols{worker}", h * T3, True, m * HW).reshape(h * T3 + 1, m, HW)
        hbuf, tbuf = (ws["input"].get(f"{key}{worker}", (C * m * HW,), dt) for key in ("h", "t"))
        for s in range(lo, hi, m):
            mi = min(hi, s + m) - s
            L = mi * HW
            o = s if keep else 0  # first image of the chunk in the saved activations
            j0, j1 = o * HW, o * HW + L
            Hc = hbuf[:C * L].reshape(C, L)
            im2col(x3, True, s, mi, Wd, taps1, cols1)
            forward_product(Wb["input"], cols1.reshape(T1 + 1, m * HW)[:, :L], Hc)  # [eq:masked-conv]
            np.maximum(Hc, 0, out=A[0][:C, j0:j1])
            for l in range(n_layers):
                p = f"res{l}"
                u, v, t = U[l][:, j0:j1], V[l][:h, j0:j1], tbuf[:C * L].reshape(C, L)
                np.matmul(Wb[p + ".in"], A[l][:, j0:j1], out=u)
                relu_(U[l], h, j0, L)
                if UW is not None:  # [eq:winograd-f23]
                    wino.forward_chunk(U[l].reshape(h, -1, HW), True, o, mi, Wd, *UW[p], params[p + ".conv.b"],
                                       V[l][:h].reshape(h, -1, HW), Vw, Mw)
                else:
                    im2col(U[l].reshape(h, -1, HW), True, o, mi, Wd, taps3, cols3)
                    np.matmul(Wb[p + ".conv"], cols3.reshape(len(cols3), m * HW)[:, :L], out=v)
                relu_(V[l], h, j0, L)
                np.matmul(Wb[p + ".out"], V[l][:, j0:j1], out=t)
                residual_relu_(Hc, t, A[l + 1], j0)  # H += branch, and the next ReLU(H)  [eq:pixelcnn-residual]
            np.matmul(Wb["out1"], A[n_layers][:, j0:j1], out=O[:C, j0:j1])
            relu_(O, C, j0, L)
            np.matmul(Wb["out2"], O[:, j0:j1], out=y2[:, s * HW:s * HW + L])

    run_ranges(job, ranges)
    tape = None
    if keep:
        A, U, V, O = saved
        tape = {"x": x, "m": m, "ranges": ranges, "Wb": Wb, "A": A, "U": U, "V": V, "O": O,
                "taps1": taps1, "taps3": taps3, "ws": ws, "UW": UW}
    return logits, tape


def _winograd_weights(params, n_layers, Wd):
    """``{"res<l>": (U3, Uc)}``, the transformed weights of the residual blocks' 3x3 layers when
    they run Winograd (``masked_conv._winograd_applies``: 3x3, enough channels, an even width), else None."""
    if not n_layers:
        return None
    h, _, T3 = params["res0.conv.W"].shape
    if not _winograd_applies(kernel_size_from_taps(T3, "B"), "B", h, Wd):
        return None
    out = {}
    for l in range(n_layers):
        U3, Uc = wino.weight_transform(params[f"res{l}.conv.W"])
        out[f"res{l}"] = (U3, Uc)
    return out


def _winograd_buffers(ws, worker, h, pairs, dt):
    """A worker's transformed inputs (7, h, pairs) and products (4, h, pairs), shared by the 3x3 layers."""
    return (ws["res0.conv"].get(f"wV{worker}", (7, h, pairs), dt), ws["res0.conv"].get(f"wM{worker}", (4, h, pairs), dt))


def network_backward(d_logits, tape, n_layers, grads):
    """Backward of :func:`network_forward` by the chain rule in reverse layer order, chunk by chunk.

    Writes every parameter's gradient into ``grads`` (same keys as ``params``).
    """
    x, m, ranges, Wb, A, U, V, O = (tape[k] for k in ("x", "m", "ranges", "Wb", "A", "U", "V", "O"))
    taps1, taps3, ws, UW = (tape[k] for k in ("taps1", "taps3", "ws", "UW"))
    _, N, H, Wd = x.shape
    HW, dt = H * Wd, x.dtype
    C, K, h = A[0].shape[0] - 1, Wb["out2"].shape[0], (U[0].shape[0] if n_layers else 0)
    T1 = taps1.shape[0]
    T3 = taps3.shape[0] if n_layers else 0
    WT = {name: Wb[name][:, :-1].T for name in Wb}  # for the input gradients  [eq:masked-conv-backward-x]
    x3, dl2 = x.reshape(1, N, HW), d_logits.reshape(K, N * HW)
    winograd = {p + ".conv" for p in UW} if UW is not None else set()  # their dW come from wsums, not dw()
    gathered = {name: W for name, W in Wb.items() if name not in winograd}
    shapes = {name: (W.shape[::-1] if dw_transposed(*W.shape) else W.shape) for name, W in gathered.items()}
    accs = [{name: np.empty(shape, dt) for name, shape in shapes.items()} for _ in ranges]  # per worker
    wsums = [{p: wino.weight_sums(h, h, dt) for p in UW} for _ in ranges] if UW is not None else None

    def scratch(layer, key, worker, size):
        return ws[layer].get(f"{key}{worker}", (size,), dt)

    def job(lo, hi, worker):  # images lo..hi-1 into this worker's weight-gradient sums
        acc, tmp = accs[worker], {name: np.empty(shape, dt) for name, shape in shapes.items()}
        dbuf, cbuf = scratch("input", "h", worker, C * m * HW), scratch("input", "t", worker, C * m * HW)
        cols1 = ws["input"].get(f"cols{worker}", (T1 + 1, m * HW), dt).reshape(T1 + 1, m, HW)
        cols1[T1] = 1
        vbuf = ubuf = cols3 = Vw = Mw = None  # buffers of the residual blocks; a network may have none (n_layers=0)
        if n_layers:
            vbuf, ubuf = scratch("res0.conv", "dv", worker, h * m * HW), scratch("res0.conv", "du", worker, h * m * HW)
        if UW is not None:
            Vw, Mw = _winograd_buffers(ws, worker, h, m * HW // 2, dt)
        elif n_layers:
            cols3 = ws["res0.conv"].get(f"cols{worker}", (h * T3 + 1, m * HW), dt).reshape(h * T3 + 1, m, HW)
            cols3[h * T3] = 1
        for s in range(lo, hi, m):
            mi = min(hi, s + m) - s
            L, j0, first = mi * HW, s * HW, s == lo

            def dw(name, dY, X):  # [eq:masked-conv-backward-w]; db is the column of the ones row
                accumulate_dw(acc[name], dY, X, first, tmp[name])

            dl = dl2[:, j0:j0 + L]
            dw("out2", dl, O[:, j0:j0 + L])
            d_o = cbuf[:C * L].reshape(C, L)
            if K == 1:  # an outer product: BLAS is slow at K = 1
                np.multiply(WT["out2"], dl, out=d_o)
            else:
                np.matmul(WT["out2"], dl, out=d_o)
            relu_grad_(d_o, O, j0)
            dw("out1", d_o, A[n_layers][:, j0:j0 + L])
            dH = dbuf[:C * L].reshape(C, L)  # gradient of the residual stream
            relu_grad_(np.matmul(WT["out1"], d_o, out=dH), A[n_layers], j0)
            for l in reversed(range(n_layers)):
                p = f"res{l}"
                dw(p + ".out", dH, V[l][:, j0:j0 + L])  # the skip passes dH through unchanged  [eq:pixelcnn-residual]
                d_v = vbuf[:h * L].reshape(h, L)
                relu_grad_(np.matmul(WT[p + ".out"], dH, out=d_v), V[l], j0)
                d_u = ubuf[:h * L].reshape(h, mi, HW)
                if UW is not None:  # [eq:winograd-f23]
                    wino.backward_chunk(U[l].reshape(h, N, HW), s, d_v.reshape(h, mi, HW), d_u, 0, True, mi, Wd,
                                        *UW[p], Vw, Mw, wsums[worker][p], first)
                else:
                    im2col(U[l].reshape(h, N, HW), True, s, mi, Wd, taps3, cols3)
                    c2 = cols3.reshape(len(cols3), m * HW)[:, :L]
                    dw(p + ".conv", d_v, c2)
                    np.matmul(WT[p + ".conv"], d_v, out=c2[:-1])
                    col2im(cols3, taps3, d_u, True, 0, mi, Wd)
                d_u = d_u.reshape(h, L)
                relu_grad_(d_u, U[l], j0)
                dw(p + ".in", d_u, A[l][:, j0:j0 + L])
                d_a = cbuf[:C * L].reshape(C, L)
                relu_grad_add_(dH, np.matmul(WT[p + ".in"], d_u, out=d_a), A[l], j0)
            im2col(x3, True, s, mi, Wd, taps1, cols1)
            dw("input", dH, cols1.reshape(len(cols1), m * HW)[:, :L])

    run_ranges(job, ranges)
    for p in UW or ():  # the Winograd layers' sums, in worker order
        for more in wsums[1:]:
            for a, b in zip(wsums[0][p], more[p]):
                a += b
        dW, db = wino.weight_gradient(wsums[0][p])
        np.copyto(grads[p + ".conv.W"], dW)
        np.copyto(grads[p + ".conv.b"], db)
    for name, W in gathered.items():
        total = accs[0][name]
        for more in accs[1:]:  # the workers' partial sums, in worker order
            total += more[name]
        dWb = total.T if dw_transposed(*W.shape) else total
        np.copyto(grads[name + ".W"].reshape(W.shape[0], -1), dWb[:, :-1])
        np.copyto(grads[name + ".b"], dWb[:, -1])


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
        logits, tape = _forward(self._params, self._scaled(X), self.n_layers, self._ws, keep=want_grads)
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

    def _loss_and_grads(self, X, copy=True):
        """Mean NLL ``[eq:pixelcnn-nll]`` of checked images and its gradients (copies, or the live buffers)."""
        value = self._loss(X, True)
        grads = {k: g.copy() for k, g in self._grads.items()} if copy else self._grads
        return float(np.mean(value, dtype=np.float64)), grads

    # ------------------------------------------------------------------ evaluation
    def _logits(self, X):
        """Copy of the network's logits, (K, N, H, W)."""
        out = None
        for s in range(0, X.shape[0], _EVAL_CHUNK):
            logits, _ = _forward(self._params, self._scaled(X[s:s + _EVAL_CHUNK]), self.n_layers, self._ws, False)
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
                    logits, _ = _forward(self._params, self._scaled(Xc), self.n_layers, self._ws, False)
                    u = rng.random(Xc.shape[0])
                    row = logits[0, :, i, j] if self.levels == 2 else logits[:, :, i, j].T
                    Xc[:, i, j] = draw_pixel(row, u, self.levels)
        return X
