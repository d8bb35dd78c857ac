"""probgen: autograd-free reference implementations of classic probabilistic generative models."""
__version__ = "0.1.0"
