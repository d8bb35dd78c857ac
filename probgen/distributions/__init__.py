"""Distributions and divergences: Gaussian log-densities and MLE, Bernoulli and
categorical log-probabilities from logits, NLL units, and KL divergences.

Derivations: ``docs/mle.md``, ``docs/gaussian.md``, ``docs/kl.md``.
"""
from .discrete import bernoulli_log_prob, categorical_log_prob, log_softmax, softplus
from .gaussian import fit_gaussian, gaussian_log_prob, gaussian_log_prob_diag
from .kl import (
    kl_bernoulli,
    kl_categorical,
    kl_gaussian,
    kl_gaussian_diag,
    kl_monte_carlo,
    kl_normal_std,
)
from .nll import bits_per_dim, nll_nats

__all__ = [
    "gaussian_log_prob",
    "gaussian_log_prob_diag",
    "fit_gaussian",
    "bernoulli_log_prob",
    "categorical_log_prob",
    "softplus",
    "log_softmax",
    "nll_nats",
    "bits_per_dim",
    "kl_gaussian",
    "kl_gaussian_diag",
    "kl_normal_std",
    "kl_bernoulli",
    "kl_categorical",
    "kl_monte_carlo",
]
