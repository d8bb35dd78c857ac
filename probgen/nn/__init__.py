"""``probgen.nn``: a small, explicit, autograd-free neural toolkit.

* :mod:`probgen.nn.functional` -- forward/backward pairs as pure functions
  (linear, relu, leaky_relu, tanh, sigmoid, softplus) and stable maps;
* :mod:`probgen.nn.losses` -- Bernoulli, Gaussian and categorical NLLs and MSE,
  one value per example;
* :mod:`probgen.nn.layers` -- thin layers with ``params``/``grads`` dicts,
  :class:`Sequential` and :func:`mlp`;
* :mod:`probgen.nn.init` -- Glorot/He initialisers from an explicit ``rng``;
* :mod:`probgen.nn.optim` -- :class:`SGD` and :class:`Adam` over dotted-name dicts;
* :mod:`probgen.nn.gradcheck` -- finite-difference gradient checks.

The derivations are in ``docs/nn.md``.
"""
from . import functional, init, losses
from .gradcheck import GradcheckError, GradcheckReport, gradcheck, numerical_gradient, numerical_vjp, relative_error
from .init import glorot_normal, glorot_uniform, he_normal, he_uniform
from .layers import ACTIVATIONS, LeakyReLU, Linear, Module, ReLU, Sequential, Sigmoid, Softplus, Tanh, mlp
from .optim import SGD, Adam, Optimizer, adam_update, adam_update_reference

__all__ = [
    "functional", "losses", "init",
    "Module", "Linear", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softplus", "Sequential", "mlp",
    "ACTIVATIONS",
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
    "Optimizer", "SGD", "Adam", "adam_update", "adam_update_reference",
    "gradcheck", "GradcheckReport", "GradcheckError", "numerical_gradient", "numerical_vjp",
    "relative_error",
]
