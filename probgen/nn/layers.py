"""Layers: thin stateful wrappers around the pairs in :mod:`probgen.nn.functional`.

A layer keeps the parameters in ``params`` and their gradients in ``grads``
(dicts of arrays with the same keys), and the cache of its **last** forward
call.  ``backward(dy)`` adds into ``grads`` (``+=``, like torch's ``.grad``)
and returns ``dx``; ``zero_grad()`` sets every gradient to 0 in place.  So one
``forward`` per ``backward``: a layer used twice in one pass needs two layers
(or a reshape to one batch, which :class:`Linear` supports over any leading
axes).

Names: :meth:`Module.named_parameters` maps dotted names (``"0.W"``,
``"encoder.2.b"``) to the *live* parameter arrays, so writing into them (an
optimiser step, loading a checkpoint) changes the model, and
:meth:`Module.named_grads` has the same keys.  This is the seam that
optimisers, :func:`probgen.nn.gradcheck` and the models' ``loss_and_grads``
share (``docs/nn.md``).
"""
from __future__ import annotations

import numpy as np

from .._validation import check_dtype, check_option, check_positive_int, check_rng
from . import functional as F
from ._checks import check_cache, upstream
from .init import INITIALIZERS, initialize

__all__ = [
    "Module",
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Sequential",
    "mlp",
    "ACTIVATIONS",
]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Module:
    """Base class: own ``params``/``grads`` plus named child modules.

    Subclasses set ``self.params`` and ``self.grads`` (same keys, same shapes)
    and override :meth:`forward`, :meth:`backward` and, for containers,
    :meth:`children`.  A model composing sub-networks can subclass this and
    return ``{"encoder": ..., "decoder": ...}`` from :meth:`children` to get
    ``"encoder.0.W"``-style names for free.
    """

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache = None

    # -- structure ---------------------------------------------------------------
    def children(self) -> dict[str, Module]:
        """Named sub-modules, in order (none for a leaf layer)."""
        return {}

    def named_parameters(self, prefix: str = "") -> dict[str, np.ndarray]:
        """``{dotted name: live parameter array}`` over this module and its children."""
        out = {_join(prefix, k): v for k, v in self.params.items()}
        for name, child in self.children().items():
            out.update(child.named_parameters(_join(prefix, name)))
        return out

    def named_grads(self, prefix: str = "") -> dict[str, np.ndarray]:
        """``{dotted name: live gradient array}``, the keys of :meth:`named_parameters`."""
        out = {_join(prefix, k): v for k, v in self.grads.items()}
        for name, child in self.children().items():
            out.update(child.named_grads(_join(prefix, name)))
        return out

    def zero_grad(self) -> None:
        """Set every gradient to 0 in place (the arrays keep their identity)."""
        for g in self.grads.values():
            g.fill(0)
        for child in self.children().values():
            child.zero_grad()

    def _prepare_backward(self) -> None:
        """Private :meth:`zero_grad` for a model's own step, when one backward pass follows at once.

        Layers whose backward writes every gradient entry after a reset (:class:`Linear`) skip the
        fill and only remember the reset; the others fill.  The gradient arrays hold stale values
        until that backward runs, so this is for internal ``loss_and_grads`` paths only.
        """
        for g in self.grads.values():
            g.fill(0)
        for child in self.children().values():
            child._prepare_backward()

    def n_parameters(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.named_parameters().values()))

    def load_parameters(self, arrays, *, strict: bool = True) -> None:
        """Copy ``arrays`` (``{dotted name: array}``) into the live parameters.

        Shapes must match exactly; values are cast to the parameter's dtype and
        must be finite.  With ``strict`` (default) the keys must be exactly
        those of :meth:`named_parameters`.  Nothing is written unless every
        array passes.
        """
        own = self.named_parameters()
        given = set(arrays)
        if strict and given != set(own):
            missing, extra = sorted(set(own) - given), sorted(given - set(own))
            raise ValueError(f"parameter names differ: missing {missing}, unexpected {extra}")
        staged = {}
        for name in given & set(own):
            a = np.asarray(arrays[name])
            if a.shape != own[name].shape:
                raise ValueError(f"parameter {name!r} must have shape {own[name].shape}, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"parameter {name!r} contains NaN or infinite values")
            staged[name] = a
        for name, a in staged.items():
            np.copyto(own[name], a, casting="same_kind")

    # -- computation -------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: np.ndarray, *, need_dx: bool = True):  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def _get_cache(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Module):
    """Affine layer :math:`y = x W + b` ``[eq:linear-forward]``.

    Parameters
    ----------
    in_features, out_features : int
    init : {"glorot_uniform", "glorot_normal", "he_uniform", "he_normal"}
        Initialiser of ``W`` (:mod:`probgen.nn.init`); ``b`` starts at 0.
    rng : None, int or numpy.random.Generator
    dtype : float32 or float64

    Attributes
    ----------
    params : {"W": ndarray (I, O), "b": ndarray (O,)}
    grads : same keys and shapes, accumulated by :meth:`backward`.
    """

    def __init__(self, in_features: int, out_features: int, *, init: str = "glorot_uniform",
                 rng=None, dtype=np.float64):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.init = check_option(init, "init", tuple(INITIALIZERS))
        dtype = check_dtype(dtype)
        self.params = {
            "W": initialize(init, self.in_features, self.out_features, check_rng(rng), dtype),
            "b": np.zeros(self.out_features, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._zeroed = self._grad_arrays()  # zeroed by zero_grad(): backward may write, not add
        self._dw = None  # scratch (I, O) for the accumulating case

    def _grad_arrays(self):
        return self.grads["W"], self.grads["b"]

    def zero_grad(self) -> None:
        super().zero_grad()
        self._zeroed = self._grad_arrays()

    def _prepare_backward(self) -> None:  # backward overwrites W's and b's gradients: no fill
        self._zeroed = self._grad_arrays()

    def forward(self, x):
        """``x`` of shape (..., I) in the layer's dtype -> ``y`` of shape (..., O)."""
        y, self._cache = F.linear_forward(x, self.params["W"], self.params["b"])
        return y

    def backward(self, dy, *, need_dx: bool = True):
        """Accumulate ``dW``, ``db`` ``[eq:linear-backward]``; return ``dx`` (None if not ``need_dx``).

        Same maths as :func:`probgen.nn.functional.linear_backward`.  Right after
        :meth:`zero_grad` (the usual case: one backward per step) :math:`x^\\top dy` is written
        straight into ``grads["W"]`` by NumPy's GEMM, with no temporary and no addition pass;
        otherwise it goes through a scratch array and is added.  Everything runs on NumPy's BLAS:
        a second BLAS library in the process (SciPy's own OpenBLAS, used here before) keeps a
        second thread pool spinning, and on 2 cores with 2 threads that made a GAN step ten
        times slower (50 ms against 5 ms).  Non-zero values written into ``grads`` in place
        between :meth:`zero_grad` and :meth:`backward` are overwritten, not added to (replacing
        the arrays themselves is detected, and then the product is added).
        """
        x, W = check_cache(self._get_cache(), "linear", 2)
        dy = upstream(dy, x.shape[:-1] + (W.shape[1],), W.dtype)
        x2 = x.reshape(-1, W.shape[0])
        dy2 = dy.reshape(-1, W.shape[1])
        GW = self.grads["W"]
        zeroed, self._zeroed = self._zeroed, None
        if zeroed is not None and all(a is b for a, b in zip(zeroed, self._grad_arrays())):
            np.matmul(x2.T, dy2, out=GW)  # [eq:linear-backward]: x^T dy written in place
            np.sum(dy2, axis=0, out=self.grads["b"])
        else:  # accumulate a second backward
            if self._dw is None:
                self._dw = np.empty_like(GW)
            GW += np.matmul(x2.T, dy2, out=self._dw)
            self.grads["b"] += dy2.sum(axis=0)
        return (dy2 @ W.T).reshape(x.shape) if need_dx else None

    def __repr__(self) -> str:
        return (f"Linear({self.in_features}, {self.out_features}, init={self.init!r}, "
                f"dtype={self.params['W'].dtype.name})")


class _Activation(Module):
    """An elementwise map without parameters, defined by a functional pair."""

    _forward = _backward = None

    def forward(self, x):
        y, self._cache = type(self)._forward(x)
        return y

    def backward(self, dy, *, need_dx: bool = True):
        cache = self._get_cache()
        return type(self)._backward(dy, cache) if need_dx else None


class ReLU(_Activation):
    """:math:`\\max(x, 0)` ``[eq:relu]``."""

    _forward, _backward = staticmethod(F.relu_forward), staticmethod(F.relu_backward)


class Tanh(_Activation):
    """:math:`\\tanh x` ``[eq:tanh-backward]``."""

    _forward, _backward = staticmethod(F.tanh_forward), staticmethod(F.tanh_backward)


class Sigmoid(_Activation):
    """:math:`\\sigma(x)` ``[eq:sigmoid-stable]``."""

    _forward, _backward = staticmethod(F.sigmoid_forward), staticmethod(F.sigmoid_backward)


class Softplus(_Activation):
    """:math:`\\log(1 + e^x)` ``[eq:softplus-stable]``."""

    _forward, _backward = staticmethod(F.softplus_forward), staticmethod(F.softplus_backward)


class LeakyReLU(_Activation):
    """:math:`x` for :math:`x>0`, ``slope``:math:`\\cdot x` otherwise ``[eq:leaky-relu]``."""

    def __init__(self, slope: float = 0.01):
        super().__init__()
        self.slope = F._check_slope(slope)

    def forward(self, x):
        y, self._cache = F.leaky_relu_forward(x, self.slope)
        return y

    def backward(self, dy, *, need_dx: bool = True):
        cache = self._get_cache()
        return F.leaky_relu_backward(dy, cache) if need_dx else None

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid,
               "softplus": Softplus}


class Sequential(Module):
    """Layers applied in order; names ``"0"``, ``"1"``, ... or given by a dict.

    Parameters
    ----------
    *layers : Module
        ``Sequential(Linear(...), ReLU(), Linear(...))`` names them "0", "1",
        "2" (torch's ``nn.Sequential`` names, so ``"0.W"``, ``"2.b"``).  A single
        dict ``{"fc1": Linear(...), "act": ReLU()}`` names them by its keys.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], dict):
            named = dict(layers[0])
        else:
            named = {str(i): layer for i, layer in enumerate(layers)}
        if not named:
            raise ValueError("Sequential needs at least one layer")
        for name, layer in named.items():
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"layer names must be non-empty strings without '.', got {name!r}")
            if not isinstance(layer, Module):
                raise TypeError(f"layer {name!r} must be a probgen.nn Module, got {type(layer).__name__}")
        self.layers = named

    def children(self) -> dict[str, Module]:
        return dict(self.layers)

    def __getitem__(self, key) -> Module:
        if isinstance(key, int):
            return list(self.layers.values())[key]
        return self.layers[key]

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x):
        """Apply every layer in order."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def backward(self, dy, *, need_dx: bool = True):
        """Back through the layers in reverse; the first layer skips ``dx`` unless ``need_dx``."""
        layers = list(self.layers.values())
        for i in range(len(layers) - 1, -1, -1):
            dy = layers[i].backward(dy, need_dx=need_dx or i > 0)
        return dy

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({k}): {v!r}" for k, v in self.layers.items())
        return f"Sequential(\n{inner}\n)"


def mlp(sizes, activation: str = "relu", *, rng=None, dtype=np.float64, init: str | None = None,
        final_activation: str | None = None) -> Sequential:
    """Multi-layer perceptron ``Linear, act, Linear, act, ..., Linear``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``(D_in, H_1, ..., D_out)``, at least two.
    activation : {"relu", "leaky_relu", "tanh", "sigmoid", "softplus"}
        Between the linear layers (not after the last one).
    rng : None, int or numpy.random.Generator
        One generator feeds every layer in order, so a seed fixes all weights.
    dtype : float32 or float64
    init : str or None
        Weight initialiser; default ``"he_normal"`` for relu / leaky_relu and
        ``"glorot_uniform"`` otherwise ``[eq:he]`` ``[eq:glorot]``.
    final_activation : str or None
        Optional activation after the last linear layer.

    Returns
    -------
    Sequential
        Linear layers at even indices: parameters ``"0.W"``, ``"0.b"``,
        ``"2.W"``, ...
    """
    sizes = [check_positive_int(s, "sizes[i]") for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least two widths (input, output), got {sizes}")
    check_option(activation, "activation", tuple(ACTIVATIONS))
    if final_activation is not None:
        check_option(final_activation, "final_activation", tuple(ACTIVATIONS))
    if init is None:
        init = "he_normal" if activation in ("relu", "leaky_relu") else "glorot_uniform"
    rng = check_rng(rng)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, init=init, rng=rng, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    if final_activation is not None:
        layers.append(ACTIVATIONS[final_activation]())
    return Sequential(*layers)
