"""Neural generative models built on :mod:`probgen.nn` (hand-written backward passes)."""
from .ae import Autoencoder
from .fvsbn import FVSBN
from .gan import GAN
from .hvae import HierarchicalVAE
from .markov import MarkovChain, count_parameters
from .nade import NADE
from .pixelcnn import PixelCNN
from .pixelrnn import PixelRNN
from .vae import VAE
from .vqvae import VQVAE

__all__ = [
    "Autoencoder", "VAE", "HierarchicalVAE", "GAN", "MarkovChain", "FVSBN", "NADE", "PixelCNN", "PixelRNN", "VQVAE",
    "count_parameters",
]
