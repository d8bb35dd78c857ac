"""probgen: autograd-free reference implementations of classic probabilistic generative models.

Density estimators follow scikit-learn's conventions (``fit``, ``score_samples``,
``sample``, fitted attributes with a trailing underscore); neural models share one
seam, ``named_parameters()`` / ``loss_and_grads(X, ...)``.  Every equation in the
code cites the labelled equation in ``docs/`` that it carries out.
"""
from . import datasets, distributions, em, kernels, metrics, nn
from ._validation import NotFittedError
from .linear_latent import PPCA
from .mixture import GaussianMixture
from .models import (
    FVSBN,
    GAN,
    NADE,
    VAE,
    VQVAE,
    Autoencoder,
    HierarchicalVAE,
    MarkovChain,
    PixelCNN,
    PixelRNN,
    count_parameters,
)

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "PPCA",
    "NotFittedError",
    "Autoencoder",
    "VAE",
    "HierarchicalVAE",
    "GAN",
    "MarkovChain",
    "FVSBN",
    "NADE",
    "PixelCNN",
    "PixelRNN",
    "VQVAE",
    "count_parameters",
    "datasets",
    "distributions",
    "em",
    "kernels",
    "metrics",
    "nn",
]
