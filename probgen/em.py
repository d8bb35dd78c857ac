"""The EM driver shared by :class:`probgen.GaussianMixture` and :class:`probgen.PPCA`.

The driver knows nothing about the model.  It repeatedly calls a *step*
function that carries out one E-step followed by one M-step and returns the
new parameters together with the mean log-likelihood of the data under the
parameters the E-step used ``[eq:em-general]``.  EM guarantees that this
sequence never decreases ``[eq:em-monotone]``; the driver records it, stops
when it changes by less than ``tol`` and shows a progress bar.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._progress import progress_bar
from ._validation import check_nonnegative_float, check_positive_int

__all__ = ["EMResult", "run_em"]


@dataclass
class EMResult:
    """What one EM run produced.

    Attributes
    ----------
    params : object
        Parameters after the last M-step.
    lower_bounds : list of float
        Mean log-likelihood per sample evaluated at the start of each iteration
        (the parameters the E-step of that iteration used).
    converged : bool
        True when two successive values differed by less than ``tol``.
    n_iter : int
        Number of E+M iterations carried out.
    """

    params: Any
    lower_bounds: list = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0

    @property
    def lower_bound(self) -> float:
        return self.lower_bounds[-1] if self.lower_bounds else -np.inf


def run_em(
    step: Callable[[Any], tuple[Any, float]],
    params,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    progress: bool = True,
    desc: str = "EM",
    warn_decrease: float = 1e-8,
) -> EMResult:
    """Iterate ``params, ll = step(params)`` until convergence ``[eq:em-general]``.

    Parameters
    ----------
    step : callable
        ``step(params) -> (new_params, mean_log_likelihood)``: one E-step at
        ``params`` (whose mean log-likelihood is returned) followed by the
        M-step that produces ``new_params``.
    params : object
        Initial parameters.
    max_iter : int
        Maximum number of iterations.
    tol : float
        Stop when ``|ll_t - ll_{t-1}| < tol`` (``tol=0`` runs all
        ``max_iter`` iterations).
    progress : bool
        Show a tqdm bar (only on a TTY).
    warn_decrease : float
        A decrease larger than this (relative) is reported with a
        ``RuntimeWarning``: EM cannot decrease the likelihood ``[eq:em-monotone]``,
        so it means lost precision or regularisation dominating.

    Returns
    -------
    EMResult
    """
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonnegative_float(tol, "tol")
    result = EMResult(params=params)
    previous = -np.inf
    with progress_bar(max_iter, desc=desc, enabled=progress) as bar:
        for it in range(1, max_iter + 1):
            params, ll = step(params)
            ll = float(ll)
            if not np.isfinite(ll):
                raise FloatingPointError(
                    f"{desc}: the log-likelihood became {ll} at iteration {it}; "
                    "increase the regularisation (e.g. reg_covar) or check the data"
                )
            result.lower_bounds.append(ll)
            result.params = params
            result.n_iter = it
            if previous - ll > warn_decrease * max(1.0, abs(ll)):
                warnings.warn(
                    f"{desc}: log-likelihood decreased from {previous:.10g} to {ll:.10g} "
                    f"at iteration {it}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            bar.update(1)
            bar.set_postfix(ll=f"{ll:.6g}")
            if abs(ll - previous) < tol:
                result.converged = True
                break
            previous = ll
    return result
