"""Gaussian mixtures fitted by EM: pure ``e_step``/``m_step`` functions and a thin estimator."""
from ._estep import e_step
from ._init import initial_responsibilities, kmeans_plusplus
from ._mstep import m_step
from ._params import (
    n_parameters,
    precision_cholesky,
    precision_cholesky_from_precisions,
    precisions_from_cholesky,
)
from .gaussian_mixture import ConvergenceWarning, GaussianMixture

__all__ = [
    "GaussianMixture",
    "ConvergenceWarning",
    "e_step",
    "m_step",
    "precision_cholesky",
    "precision_cholesky_from_precisions",
    "precisions_from_cholesky",
    "n_parameters",
    "kmeans_plusplus",
    "initial_responsibilities",
]
