"""Optimisers over dotted-name dicts: ``SGD`` (momentum) and ``Adam``.

An optimiser is built on ``model.named_parameters()`` (live arrays) and
``step(grads)`` takes a dict with the same keys (``model.named_grads()`` or
the grads returned by ``loss_and_grads``) and updates the parameters **in
place**, with torch.optim's semantics (``docs/nn.md``, ``[eq:sgd-momentum]``,
``[eq:adam]``).  The state (moments and step count) round-trips through
:meth:`state_dict` / :meth:`load_state_dict` as plain arrays and numbers, so a
checkpoint stores it with ``np.savez`` and reads it with
``np.load(allow_pickle=False)``.

Adam's per-array update is one fused serial Numba loop, :func:`adam_update`,
beside its NumPy twin :func:`adam_update_reference` that defines its meaning.
It is deliberately not ``parallel=True``: between BLAS calls on few cores,
Numba's spinning workers steal the cores from BLAS (PERFORMANCE.md).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._validation import check_nonnegative_float, check_positive_int
from ._checks import FLOAT_DTYPES

__all__ = ["Optimizer", "SGD", "Adam", "adam_update", "adam_update_reference"]


# --------------------------------------------------------------------------- Adam kernel
@njit(cache=True, error_model="numpy", fastmath=False)
def _adam_kernel(p, g, m, v, step_size, one_minus_beta1, beta2, one_minus_beta2,
                 bc2_sqrt, eps, weight_decay):  # pragma: no cover - compiled
    for i in range(p.size):
        g_i = g[i] + weight_decay * p[i]
        m_i = m[i] + one_minus_beta1 * (g_i - m[i])
        v_i = beta2 * v[i] + one_minus_beta2 * g_i * g_i
        m[i] = m_i
        v[i] = v_i
        p[i] -= step_size * (m_i / (np.sqrt(v_i) / bc2_sqrt + eps))  # [eq:adam]


def _check_adam_arrays(p, g, m, v):
    for name, a in (("p", p), ("g", g), ("m", m), ("v", v)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be an ndarray, got {type(a).__name__}")
        if a.dtype != p.dtype or a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have p's dtype (float32 or float64), got {a.dtype}")
        if a.shape != p.shape:
            raise ValueError(f"{name} must have p's shape {p.shape}, got {a.shape}")
    for name, a in (("p", p), ("m", m), ("v", v)):
        if not (a.flags.c_contiguous and a.flags.writeable):
            raise ValueError(f"{name} must be a writeable C-contiguous array (it is updated in place)")


def adam_update(p, g, m, v, *, lr, beta1, beta2, eps, step, weight_decay=0.0) -> None:
    """One Adam update of one array, in place, as a fused Numba loop ``[eq:adam]``.

    Parameters
    ----------
    p : ndarray, C-contiguous
        Parameter, updated in place.
    g : ndarray of the shape and dtype of ``p``
        Its gradient.
    m, v : ndarray of the shape and dtype of ``p``, C-contiguous
        First and second moment estimates, updated in place.
    lr, beta1, beta2, eps, weight_decay : float
    step : int
        The step number :math:`t \\ge 1` of this update (for bias correction).

    Notes
    -----
    Arithmetic runs in ``p``'s dtype, in the order of torch's single-tensor
    Adam, so float64 trajectories agree with ``torch.optim.Adam`` to rounding.
    """
    _check_adam_arrays(p, g, m, v)
    _adam_apply(p, g, m, v, lr, beta1, beta2, eps, check_positive_int(step, "step"), weight_decay)


def _adam_apply(p, g, m, v, lr, beta1, beta2, eps, step, weight_decay) -> None:
    """:func:`adam_update` on arguments already checked (the optimiser's hot path)."""
    dt = p.dtype.type
    bc1 = 1.0 - beta1 ** step
    bc2_sqrt = (1.0 - beta2 ** step) ** 0.5
    _adam_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1),
                 dt(lr / bc1), dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2), dt(bc2_sqrt), dt(eps),
                 dt(weight_decay))


def adam_update_reference(p, g, m, v, *, lr, beta1, beta2, eps, step, weight_decay=0.0) -> None:
    """NumPy twin of :func:`adam_update` (a chain of ufuncs, same arithmetic) ``[eq:adam]``."""
    _check_adam_arrays(p, g, m, v)
    step = check_positive_int(step, "step")
    dt = p.dtype.type
    if weight_decay:
        g = g + dt(weight_decay) * p
    m += dt(1.0 - beta1) * (g - m)
    v *= dt(beta2)
    v += dt(1.0 - beta2) * g * g
    bc1 = 1.0 - beta1 ** step
    bc2_sqrt = (1.0 - beta2 ** step) ** 0.5
    denom = np.sqrt(v) / dt(bc2_sqrt) + dt(eps)
    p -= dt(lr / bc1) * (m / denom)  # [eq:adam]


# --------------------------------------------------------------------------- base class
def _check_params(params) -> dict[str, np.ndarray]:
    if not isinstance(params, dict) or not params:
        raise TypeError("params must be a non-empty dict {name: ndarray} (e.g. model.named_parameters())")
    for name, p in params.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {name!r}")
        if not isinstance(p, np.ndarray) or p.dtype not in FLOAT_DTYPES:
            raise TypeError(f"parameter {name!r} must be a float32/float64 ndarray")
        if not (p.flags.c_contiguous and p.flags.writeable):
            raise ValueError(f"parameter {name!r} must be a writeable C-contiguous array (updated in place)")
    return dict(params)


def _hyper(value, name, *, below_one=False) -> float:
    value = check_nonnegative_float(value, name)
    if below_one and value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


class Optimizer:
    """Shared machinery: the parameter dict, gradient checks and the state format.

    Subclasses define ``_hypers`` (names of float hyper-parameters),
    ``_slots`` (names of per-parameter state arrays) and :meth:`_update`.
    """

    _hypers: tuple[str, ...] = ()
    _slots: tuple[str, ...] = ()

    def __init__(self, params):
        self.params = _check_params(params)
        self.n_steps = 0
        self.state = {slot: {k: np.zeros_like(p) for k, p in self.params.items()} for slot in self._slots}

    def _checked_grads(self, grads):
        if not isinstance(grads, dict):
            raise TypeError(f"grads must be a dict {{name: ndarray}}, got {type(grads).__name__}")
        if grads.keys() != self.params.keys():
            missing = sorted(set(self.params) - set(grads))
            extra = sorted(set(grads) - set(self.params))
            raise ValueError(f"grads must have the parameters' names: missing {missing}, unexpected {extra}")
        for name, p in self.params.items():
            g = grads[name]
            if not isinstance(g, np.ndarray) or g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] must be an array of shape {p.shape}, "
                                 f"got {getattr(g, 'shape', type(g).__name__)}")
            if g.dtype != p.dtype:
                raise TypeError(f"grads[{name!r}] has dtype {g.dtype}, parameter has {p.dtype}")
        return grads

    def step(self, grads) -> None:
        """Update every parameter in place from ``grads`` (same names and shapes)."""
        grads = self._checked_grads(grads)
        self.n_steps += 1
        for name, p in self.params.items():
            self._update(name, p, grads[name])

    def _update(self, name, p, g):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Copies of the state as ``{"n_steps": int, <hyper>: float, "<slot>.<name>": ndarray}``."""
        out = {"n_steps": int(self.n_steps)}
        out.update({h: float(getattr(self, h)) for h in self._hypers})
        for slot, arrays in self.state.items():
            out.update({f"{slot}.{k}": a.copy() for k, a in arrays.items()})
        return out

    def load_state_dict(self, state) -> None:
        """Restore a :meth:`state_dict` (also as read back by ``np.load``); all-or-nothing.

        Hyper-parameters are restored too (as torch does); set ``opt.lr``
        afterwards to change the learning rate of a resumed run.
        """
        expected = {"n_steps", *self._hypers}
        expected |= {f"{slot}.{k}" for slot in self._slots for k in self.params}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"optimiser state keys differ: missing {missing}, unexpected {extra}")
        n = np.asarray(state["n_steps"])
        if n.shape != () or not np.issubdtype(n.dtype, np.integer) or int(n) < 0:
            raise ValueError(f"n_steps must be a non-negative integer, got {state['n_steps']!r}")
        hypers = {}
        for h in self._hypers:
            value = np.asarray(state[h])
            if value.shape != () or not np.issubdtype(value.dtype, np.number):
                raise ValueError(f"{h} must be a number, got {state[h]!r}")
            hypers[h] = self._check_hyper(h, value.item())
        staged = {}
        for slot in self._slots:
            for k, p in self.params.items():
                a = np.asarray(state[f"{slot}.{k}"])
                if a.shape != p.shape:
                    raise ValueError(f"{slot}.{k} must have shape {p.shape}, got {a.shape}")
                if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
                    raise ValueError(f"{slot}.{k} must hold finite floats")
                staged[slot, k] = a
        self._check_staged(staged)
        for (slot, k), a in staged.items():
            np.copyto(self.state[slot][k], a, casting="same_kind")
        for h, value in hypers.items():
            setattr(self, h, value)
        self.n_steps = int(n)

    def _check_hyper(self, name, value):
        return _hyper(value, name)

    def _check_staged(self, staged) -> None:
        pass


# --------------------------------------------------------------------------- SGD
class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum, torch semantics ``[eq:sgd-momentum]``.

    Parameters
    ----------
    params : dict {name: ndarray}
        Live parameter arrays (``model.named_parameters()``), updated in place.
    lr : float
        Learning rate (a public attribute: change ``opt.lr`` for a schedule).
    momentum : float in [0, 1)
    weight_decay : float
        L2 penalty added to the gradient, ``g + weight_decay * p`` (torch's).

    Notes
    -----
    :math:`b \\leftarrow \\mu b + g`, :math:`p \\leftarrow p - \\eta b` with
    :math:`b_0 = 0` (so the first step uses :math:`b_1 = g_1`, as torch).
    """

    _hypers = ("lr", "momentum", "weight_decay")
    _slots = ("buf",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params)
        self.lr = _hyper(lr, "lr")
        self.momentum = _hyper(momentum, "momentum", below_one=True)
        self.weight_decay = _hyper(weight_decay, "weight_decay")

    def _check_hyper(self, name, value):
        return _hyper(value, name, below_one=name == "momentum")

    def _update(self, name, p, g):
        dt = p.dtype.type
        if self.weight_decay:
            g = g + dt(self.weight_decay) * p
        if self.momentum:
            buf = self.state["buf"][name]
            buf *= dt(self.momentum)
            buf += g  # [eq:sgd-momentum]
            g = buf
        p -= dt(self.lr) * g  # [eq:sgd-momentum]


# --------------------------------------------------------------------------- Adam
class Adam(Optimizer):
    """Adam with bias correction, the semantics of ``torch.optim.Adam`` ``[eq:adam]``.

    Parameters
    ----------
    params : dict {name: ndarray}
        Live parameter arrays (``model.named_parameters()``), updated in place;
        C-contiguous float32 or float64.
    lr : float
        Learning rate (public attribute ``lr``: change it for a schedule).
    betas : (float, float)
        Decay rates :math:`(\\beta_1, \\beta_2)` of the moment estimates.
    eps : float
        Added to :math:`\\sqrt{\\hat v}` (outside the square root, as torch).
    weight_decay : float
        L2 penalty added to the gradient (torch's coupled form, not AdamW).

    Attributes
    ----------
    n_steps : int
        Updates done so far (:math:`t` of the bias correction).
    state : {"m": {name: ndarray}, "v": {name: ndarray}}
    """

    _hypers = ("lr", "beta1", "beta2", "eps", "weight_decay")
    _slots = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        self.lr = _hyper(lr, "lr")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _hyper(betas[0], "betas[0]", below_one=True)
        self.beta2 = _hyper(betas[1], "betas[1]", below_one=True)
        self.eps = _hyper(eps, "eps")
        self.weight_decay = _hyper(weight_decay, "weight_decay")

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def _check_hyper(self, name, value):
        return _hyper(value, name, below_one=name in ("beta1", "beta2"))

    def _check_staged(self, staged) -> None:
        for (slot, k), a in staged.items():
            if slot == "v" and np.any(a < 0):
                raise ValueError(f"v.{k} (second moments) must be >= 0")

    def _update(self, name, p, g):
        _adam_apply(p, g, self.state["m"][name], self.state["v"][name], self.lr, self.beta1,
                    self.beta2, self.eps, self.n_steps, self.weight_decay)
