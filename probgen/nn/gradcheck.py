"""Gradient checking by central finite differences in float64.

* :func:`gradcheck` checks a ``fn() -> (loss, grads)`` closure over a dict of
  live float64 parameters (a model's ``loss_and_grads`` with its noise fixed):
  elementwise for small tensors, along random ±1 directions for large ones.
* :func:`numerical_gradient` and :func:`numerical_vjp` differentiate plain
  functions, for testing the forward/backward pairs.

Stencils ``[eq:central-difference]`` (``order=2``, error :math:`O(h^2)`) and
``[eq:five-point-stencil]`` (``order=4``, error :math:`O(h^4)`); see
``docs/nn.md`` for the error analysis and the choice of ``eps``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._validation import check_option, check_positive_float, check_positive_int, check_rng

__all__ = [
    "GradcheckReport",
    "GradcheckError",
    "gradcheck",
    "numerical_gradient",
    "numerical_vjp",
    "relative_error",
]

# (offset k, weight w): derivative ~= sum_k w f(k h) / h
_STENCILS = {
    2: ((1.0, 0.5), (-1.0, -0.5)),  # (f(h) - f(-h)) / 2h  [eq:central-difference]
    4: ((2.0, -1.0 / 12), (1.0, 8.0 / 12), (-1.0, -8.0 / 12), (-2.0, 1.0 / 12)),  # [eq:five-point-stencil]
}


def relative_error(a, b) -> float:
    """:math:`\\max|a-b| / \\max(\\max|a|, \\max|b|)`, 0 when both are all zero ``[eq:relative-error]``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    diff = float(np.max(np.abs(a - b)))
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else np.inf


def _stencil(order):
    check_option(order, "order", (2, 4))
    return _STENCILS[order]


def _derivative(f: Callable[[float], float], eps: float, order: int) -> float:
    """Finite-difference derivative at 0 of the scalar function ``t -> f(t)``."""
    return sum(w * f(k * eps) for k, w in _stencil(order)) / eps


def numerical_gradient(f, x, *, eps: float = 1e-6, order: int = 2) -> np.ndarray:
    """Elementwise finite-difference gradient of a scalar function of one array.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``.  It receives a perturbed float64 *copy* of ``x``.
    x : array_like of shape S
    eps : float
        Step :math:`h`.
    order : {2, 4}
        Central difference ``[eq:central-difference]`` or five-point stencil
        ``[eq:five-point-stencil]``.

    Returns
    -------
    grad : ndarray of shape S, float64
    """
    eps = check_positive_float(eps, "eps")
    x0 = np.array(x, dtype=np.float64)
    xp = x0.copy()
    grad = np.empty_like(x0)
    flat, gflat = xp.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        def at(t, i=i):
            flat[i] = x0.flat[i] + t
            return float(f(xp))
        gflat[i] = _derivative(at, eps, order)
        flat[i] = x0.flat[i]
    return grad


def numerical_vjp(fun, args, dy, *, wrt=None, eps: float = 1e-6, order: int = 2) -> list:
    """Finite-difference vector-Jacobian products of ``y = fun(*args)`` ``[eq:vjp]``.

    Differentiates the scalar :math:`\\langle dy, \\text{fun}(\\text{args})\\rangle`
    with respect to each argument in ``wrt``.

    Parameters
    ----------
    fun : callable
        ``fun(*args) -> ndarray`` (shape of ``dy``).
    args : sequence
        Arguments; the differentiated ones are float64 arrays.
    dy : ndarray
        Upstream gradient, the shape of ``fun``'s output.
    wrt : sequence of int or None
        Indices into ``args`` to differentiate; default every float64 ndarray.

    Returns
    -------
    list
        One float64 array per argument (``None`` for arguments not in ``wrt``).
    """
    args = list(args)
    dy = np.asarray(dy, dtype=np.float64)
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype == np.float64]
    out = [None] * len(args)
    for i in wrt:
        def scalar(xi, i=i):
            call = list(args)
            call[i] = xi
            y = np.asarray(fun(*call), dtype=np.float64)
            if y.shape != dy.shape:
                raise ValueError(f"fun returned shape {y.shape}, dy has shape {dy.shape}")
            return float(np.sum(dy * y))
        out[i] = numerical_gradient(scalar, args[i], eps=eps, order=order)
    return out


@dataclass
class GradcheckReport:
    """Outcome of :func:`gradcheck`.

    Attributes
    ----------
    max_rel_error : float
        Largest relative error over all parameters ``[eq:relative-error]``.
    rel_errors : dict {name: float}
        Per parameter: elementwise relative error, or the worst directional one.
    modes : dict {name: "elementwise" | "directional"}
    rtol : float
        The tolerance the check was held to.
    n_evaluations : int
        Calls of ``fn``.
    passed : bool
        ``max_rel_error <= rtol``.
    """

    max_rel_error: float
    rel_errors: dict = field(default_factory=dict)
    modes: dict = field(default_factory=dict)
    rtol: float = 0.0
    n_evaluations: int = 0
    passed: bool = True

    def __str__(self) -> str:
        lines = [f"gradcheck {'passed' if self.passed else 'FAILED'}: max relative error "
                 f"{self.max_rel_error:.3e} (rtol {self.rtol:.1e}, {self.n_evaluations} evaluations)"]
        for name, err in sorted(self.rel_errors.items(), key=lambda kv: -kv[1]):
            flag = "" if err <= self.rtol else "  <-- exceeds rtol"
            lines.append(f"  {name:<30} {self.modes[name]:<12} {err:.3e}{flag}")
        return "\n".join(lines)


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` on failure; the report is in ``.report``."""

    def __init__(self, report: GradcheckReport):
        super().__init__(str(report))
        self.report = report


def gradcheck(fn, params, *, eps: float = 1e-6, directions: int | None = None, rng=None,
              elementwise_max: int = 64, order: int = 2, rtol: float = 1e-6,
              raise_on_failure: bool = True) -> GradcheckReport:
    """Compare the analytic gradients of ``fn`` with central finite differences.

    Parameters
    ----------
    fn : callable
        ``fn() -> (loss, grads)``: the scalar loss at the *current* values of
        ``params`` and ``{name: gradient}`` with (at least) ``params``' keys.
        Any noise must be fixed inside (e.g. ``lambda: vae.loss_and_grads(X,
        eps=E)``).  Returned gradient arrays are copied, so live ones are fine.
    params : dict {name: ndarray}
        Live float64 arrays that ``fn`` reads (``model.named_parameters()``).
        They are perturbed in place and restored exactly before returning.
    eps : float
        Finite-difference step :math:`h` (on every perturbed entry).
    directions : int or None
        Random directions per tensor larger than ``elementwise_max``
        (default 3).  Each is a vector of independent ±1 entries
        ``[eq:directional-derivative]``.
    rng : None, int or numpy.random.Generator
        Draws the directions.
    elementwise_max : int
        Tensors with at most this many entries are checked entry by entry.
    order : {2, 4}
        Stencil ``[eq:central-difference]`` / ``[eq:five-point-stencil]``;
        with ``order=4`` use a larger ``eps`` (about 1e-3).
    rtol : float
        Pass when every relative error is at most ``rtol``.
    raise_on_failure : bool
        If True (default) a failure raises :class:`GradcheckError` (an
        ``AssertionError`` carrying ``.report``); otherwise the report is
        returned with ``passed=False``.

    Returns
    -------
    GradcheckReport

    Notes
    -----
    Elementwise: :math:`\\max_i|a_i-n_i| / \\max(\\max_i|a_i|, \\max_i|n_i|)`.
    Directional, for :math:`u \\in \\{\\pm1\\}^n`: :math:`|a^\\top u - n_u| /
    \\max(|a^\\top u|, |n_u|, \\lVert a\\rVert_2)`; the :math:`\\lVert a\\rVert_2`
    floor (the typical size of :math:`a^\\top u`) keeps a direction that is by
    chance nearly orthogonal to the gradient from inflating the error.
    """
    eps = check_positive_float(eps, "eps")
    rtol = check_positive_float(rtol, "rtol")
    elementwise_max = check_positive_int(elementwise_max, "elementwise_max", minimum=0)
    n_dir = 3 if directions is None else check_positive_int(directions, "directions")
    _stencil(order)
    if not isinstance(params, dict) or not params:
        raise TypeError("params must be a non-empty dict {name: float64 ndarray}")
    for name, p in params.items():
        if not isinstance(p, np.ndarray) or p.dtype != np.float64:
            raise TypeError(f"params[{name!r}] must be a float64 ndarray (finite differences need "
                            f"float64), got {getattr(p, 'dtype', type(p).__name__)}")
    rng = check_rng(rng)
    count = [0]

    def loss_at() -> float:
        count[0] += 1
        value = fn()[0]
        return float(value)

    loss0, grads0 = fn()
    count[0] += 1
    missing = sorted(set(params) - set(grads0))
    if missing:
        raise ValueError(f"fn returned no gradient for {missing}")
    if not np.isfinite(float(loss0)):
        raise ValueError(f"fn returned a non-finite loss {loss0}")
    analytic = {k: np.array(grads0[k], dtype=np.float64) for k in params}
    saved = {k: p.copy() for k, p in params.items()}
    errors, modes = {}, {}
    try:
        for name, p in params.items():
            a = analytic[name]
            if a.shape != p.shape:
                raise ValueError(f"gradient {name!r} has shape {a.shape}, parameter {p.shape}")
            flat, orig = p.reshape(-1), saved[name].reshape(-1)
            if p.size <= elementwise_max:
                num = np.empty(p.size)
                for i in range(p.size):
                    def at(t, i=i):
                        flat[i] = orig[i] + t
                        return loss_at()
                    num[i] = _derivative(at, eps, order)  # [eq:central-difference]
                    flat[i] = orig[i]
                errors[name], modes[name] = relative_error(a.reshape(-1), num), "elementwise"
            else:
                worst = 0.0
                norm = float(np.linalg.norm(a))
                for _ in range(n_dir):
                    u = rng.choice(np.array([-1.0, 1.0]), size=p.size)

                    def along(t):
                        np.add(orig, t * u, out=flat)
                        return loss_at()
                    num = _derivative(along, eps, order)  # [eq:directional-derivative]
                    np.copyto(flat, orig)
                    ana = float(a.reshape(-1) @ u)
                    scale = max(abs(ana), abs(num), norm)
                    err = 0.0 if ana == num else (abs(ana - num) / scale if scale > 0 else np.inf)
                    worst = max(worst, err)
                errors[name], modes[name] = worst, "directional"
    finally:
        for k, p in params.items():
            np.copyto(p, saved[k])
    max_err = max(errors.values())
    report = GradcheckReport(max_rel_error=max_err, rel_errors=errors, modes=modes, rtol=rtol,
                             n_evaluations=count[0], passed=bool(max_err <= rtol))
    if not report.passed and raise_on_failure:
        raise GradcheckError(report)
    return report
