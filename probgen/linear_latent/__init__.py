"""Linear-Gaussian latent-variable models: probabilistic PCA (closed form and EM).

Derivations: ``docs/ppca.md`` and ``docs/em.md``.
"""
from .ppca import (
    PPCA,
    ppca_closed_form,
    ppca_em_step,
    ppca_log_likelihood,
    ppca_posterior,
    sample_covariance,
)

__all__ = [
    "PPCA",
    "ppca_closed_form",
    "ppca_em_step",
    "ppca_log_likelihood",
    "ppca_posterior",
    "sample_covariance",
]
