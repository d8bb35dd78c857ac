"""Neural generative models built on :mod:`probgen.nn` (hand-written backward passes)."""
from .ae import Autoencoder
from .vae import VAE

__all__ = ["Autoencoder", "VAE"]
